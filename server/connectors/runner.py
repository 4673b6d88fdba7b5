"""Running syncs: on demand (API, CLI) and on each connector's interval, one at a time.

The lease is a row condition in the database (server.store.connectors.claim),
so with several server processes on one PostgreSQL database exactly one of them
syncs a given connector at a time, and a process that died mid-sync blocks it
only until the lease expires. Every outcome, good or bad, is written to the
connector's row (what `warden connectors show` and the dashboard read) and logged.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.connectors.android import AndroidConnector
from server.connectors.http import Sleep
from server.connectors.intune import IntuneConnector
from server.connectors.inventory import Connector, SyncError
from server.connectors.jamf import JamfConnector
from server.connectors.sync import Evaluator, SyncReport, apply, read
from server.crypto.secretbox import SecretBox, SecretBoxError
from server.db import utcnow
from server.store import agents, connectors, findings, policies

if TYPE_CHECKING:
    from server.api.deps import ServerContext

log = logging.getLogger(__name__)

CLIENTS: dict[str, Callable[..., Connector]] = {
    "intune": IntuneConnector, "jamf": JamfConnector, "android": AndroidConnector}


class LeaseHeldError(Exception):
    """Another sync of this connector is running (here or in another server process)."""


class UnknownConnectorError(Exception):
    pass


@dataclass(frozen=True)
class SyncOutcome:
    ok: bool
    report: SyncReport | None
    error: str | None


@dataclass(frozen=True)
class _Job:
    name: str
    kind: str
    source: str
    group: str | None
    settings: dict[str, Any]
    sealed_secret: str


class ConnectorRunner:
    def __init__(self, context: ServerContext, *, sleep: Sleep = time.sleep,
                 poll_seconds: float | None = None) -> None:
        self._context = context
        self._poll = poll_seconds or context.settings.connector_poll_seconds
        self._box = SecretBox.in_data_dir(context.settings.data_dir)
        self.sleep = sleep
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def box(self) -> SecretBox:
        return self._box

    # -- one sync --------------------------------------------------------------

    def sync(self, name: str) -> SyncOutcome:
        """Sync `name` now; LeaseHeldError if a sync of it runs, UnknownConnectorError if
        there is no such connector. A failed sync is an outcome, not an exception."""
        with self._context.write_sessions() as session:
            if connectors.get(session, name) is None:
                raise UnknownConnectorError(name)
            claimed = connectors.claim(session, name, self.owner)
            session.commit()
        if not claimed:
            raise LeaseHeldError(name)
        try:
            return self._run(name)
        except BaseException:
            self._finish(name, ok=False, error="the sync stopped unexpectedly", counts=None)
            raise

    def _run(self, name: str) -> SyncOutcome:
        report = SyncReport()
        try:
            job, bundle = self._load(name)
            client = CLIENTS[job.kind](job.name, job.settings, self._box.open(job.sealed_secret))
            client_http = getattr(client, "http", None)
            if client_http is not None:
                client_http._sleep = self.sleep
            evaluator = Evaluator(bundle, job.name, job.group)
            inventory = read(client, evaluator)
            report.devices = client.stats.devices
            report.apps = client.stats.apps
            report.notes = list(client.stats.notes)
            now = utcnow()
            with self._context.write_sessions() as session:
                apply(session, source=job.source, kind=job.kind, group=job.group,
                      inventory=inventory, now=now, report=report)
                connectors.finish(session, name, self.owner, ok=True, error=None,
                                  counts=report.counts(), now=now)
                session.commit()
        except (SyncError, SecretBoxError) as exc:
            log.warning("connector %s: sync failed, nothing changed: %s", name, exc)
            self._finish(name, ok=False, error=str(exc), counts=None)
            return SyncOutcome(False, None, str(exc))
        except KeyError as exc:
            error = f"the connector's settings lack {exc}; remove it and add it again"
            log.warning("connector %s: sync failed: %s", name, error)
            self._finish(name, ok=False, error=error, counts=None)
            return SyncOutcome(False, None, error)
        log.info("connector %s: synced %d devices, %d apps; %d findings opened, %d resolved, "
                 "%d devices retired", name, report.devices, report.apps,
                 report.findings_opened, report.findings_resolved, report.devices_retired)
        self._alert(report)
        return SyncOutcome(True, report, None)

    def _load(self, name: str) -> tuple[_Job, dict[str, Any]]:
        with self._context.read_sessions() as session:
            row = connectors.get(session, name)
            if row is None:
                raise SyncError("the connector was removed while it synced")
            job = _Job(row.name, row.kind, connectors.source_of(row), row.group,
                       dict(row.settings), row.secret)
            active = policies.active(session)
            version = policies.get(session, active.number) if active else None
            if version is None:
                raise SyncError("no policy is active, so no app can be judged: push and "
                                "activate a policy (`warden policy push`), then sync again")
            return job, policies.bundle_of(version)

    def _finish(self, name: str, *, ok: bool, error: str | None,
                counts: dict[str, Any] | None) -> None:
        with self._context.write_sessions() as session:
            connectors.finish(session, name, self.owner, ok=ok, error=error, counts=counts)
            session.commit()

    def _alert(self, report: SyncReport) -> None:
        hooks = self._context.hooks
        if not report.opened_deny or not hooks.on_deny_opened:
            return
        with self._context.read_sessions() as session:
            for finding_id in report.opened_deny:
                row = findings.get(session, finding_id)
                if row is not None:
                    hooks.fire(hooks.on_deny_opened,
                               findings.as_dict(row, agents.get(session, row.agent_id)))

    # -- on their intervals ------------------------------------------------------

    def run_due(self) -> int:
        """Sync every connector that is due; how many syncs ran (others hold the rest)."""
        with self._context.read_sessions() as session:
            names = connectors.due(session, utcnow())
        ran = 0
        for name in names:
            if self._stop.is_set():
                break
            try:
                self.sync(name)
                ran += 1
            except (LeaseHeldError, UnknownConnectorError):
                continue
            except Exception:
                log.exception("connector %s: the sync failed", name)
        return ran

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="connectors", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)
            if self._thread.is_alive():
                log.warning("a connector sync did not stop in time; it ends with the process")

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.run_due()
            except Exception:
                # The database may be down a while; the next poll tries again.
                log.exception("looking for connectors due for a sync failed")


def install(context: ServerContext) -> ConnectorRunner:
    runner = ConnectorRunner(context)
    context.hooks.on_startup.append(runner.start)
    context.hooks.on_shutdown.append(runner.shutdown)
    return runner
