"""One sync: read the MDM's whole inventory, then change hosts and findings in one transaction.

Reading streams page by page and keeps, per device, only its facts and the
findings the policy gives it (not its hundred apps), so memory grows with the
fleet, not with its apps. Nothing is written until the MDM has been read to the
end: a sync that fails or stops halfway (a 5xx, malformed JSON, a lost token)
raises SyncError and changes nothing. Findings then go through the same
lifecycle as an agent's (server.store.events): an app newly seen opens one, an
app a complete sync no longer lists resolves it, and a second identical sync
changes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.engine import Engine, HostContext
from policies.observations import MobileAppObservation
from policies.vocabulary import MobileOsName
from server.connectors.inventory import (
    Connector,
    MobileApp,
    MobileDevice,
    MobileInstall,
    SyncError,
)
from server.crypto import hashing
from server.models import Agent, Finding
from server.store import events

MACHINE_ID_CHARS = 255


@dataclass
class SyncReport:
    devices: int = 0
    apps: int = 0
    findings_opened: int = 0
    findings_resolved: int = 0
    devices_retired: int = 0
    notes: list[str] = field(default_factory=list)
    # Deny findings this sync opened (ids), for alerts after commit.
    opened_deny: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return {"devices": self.devices, "apps": self.apps,
                "findings_opened": self.findings_opened,
                "findings_resolved": self.findings_resolved,
                "devices_retired": self.devices_retired, "notes": self.notes}


@dataclass
class Inventory:
    """What a complete read found: each device, and the findings keyed by their key."""

    devices: dict[str, MobileDevice] = field(default_factory=dict)
    findings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


class Evaluator:
    """The active policy's engine for each mobile OS, as a phone of this connector's group."""

    def __init__(self, bundle: dict[str, Any], connector: str, group: str | None) -> None:
        groups = frozenset({group}) if group else frozenset()
        self._engines: dict[str, Engine] = {
            os: Engine(bundle, HostContext(os=os, groups=groups))
            for os in ("ios", "ipados", "android")}
        self._connector = connector
        # Whether an app (as the MDM names it, per platform) yields any finding: a fleet
        # repeats the same apps on every device, so each distinct one is judged once.
        self._matters: dict[tuple[MobileOsName, MobileApp], bool] = {}

    def findings(self, device_id: str, platform: MobileOsName,
                 app: MobileApp) -> list[dict[str, Any]]:
        if not self.wanted(app, platform):
            return []
        return self._evaluate(device_id, platform, app)

    def wanted(self, app: MobileApp, platform: MobileOsName) -> bool:
        key = (platform, app)
        matters = self._matters.get(key)
        if matters is None:
            matters = self._matters[key] = bool(self._evaluate("", platform, app))
        return matters

    def _evaluate(self, device_id: str, platform: MobileOsName,
                  app: MobileApp) -> list[dict[str, Any]]:
        observation = MobileAppObservation(
            connector=self._connector, device_id=device_id, platform=platform,
            app_id=app.app_id, display_name=app.display_name, publisher=app.publisher,
            version=app.version)
        return [finding.as_dict() for finding in self._engines[platform].evaluate(observation)]


def read(client: Connector, evaluator: Evaluator) -> Inventory:
    """The whole inventory, evaluated; raises SyncError if any page fails."""
    inventory = Inventory()
    for item in client.inventory(evaluator.wanted):
        if isinstance(item, MobileDevice):
            inventory.devices[item.id] = item
            continue
        assert isinstance(item, MobileInstall)
        for finding in evaluator.findings(item.device_id, item.platform, item.app):
            inventory.findings.setdefault(item.device_id, {})[finding["key"]] = finding
    return inventory


def apply(session: Session, *, source: str, kind: str, group: str | None,
          inventory: Inventory, now: dt.datetime, report: SyncReport) -> None:
    """Bring the connector's hosts and their `mdm` findings up to date; the caller commits."""
    hosts = {row.machine_id: row for row in session.scalars(
        sa.select(Agent).where(Agent.source == source).order_by(Agent.id).with_for_update())}
    by_device: dict[str, Agent] = {}
    for device in inventory.devices.values():
        machine_id = _machine_id(source, device.id)
        row = hosts.pop(machine_id, None)
        if row is None:
            row = _new_host(machine_id, source, kind, device, group, now)
            session.add(row)
        _describe(row, device, group, now)
        by_device[device.id] = row
    for row in hosts.values():  # no longer in the MDM
        if row.retired_at is None:
            row.retired_at = now
            row.revoked_at = row.revoked_at or now
            report.devices_retired += 1
    session.flush()
    open_keys = _open_mdm_findings(session, [row.id for row in by_device.values()])
    for device_id, row in by_device.items():
        device = inventory.devices[device_id]
        if not device.apps_known:
            continue
        wanted = inventory.findings.get(device_id, {})
        current = open_keys.get(row.id, set())
        batch = [_event("finding_opened", finding, now) for key, finding in sorted(wanted.items())
                 if key not in current]
        batch += [_event("finding_resolved", {"key": key}, now)
                  for key in sorted(current - wanted.keys())]
        if not batch:
            continue
        result = events.ingest(session, row.id, batch, now)
        report.findings_opened += len(result.opened)
        report.findings_resolved += len(result.resolved)
        report.opened_deny += [finding.id for finding in result.opened
                               if finding.verdict == "deny" and finding.id is not None]


def _open_mdm_findings(session: Session, agent_ids: list[str]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for start in range(0, len(agent_ids), 500):
        chunk = agent_ids[start:start + 500]
        for agent_id, key in session.execute(
                sa.select(Finding.agent_id, Finding.key)
                .where(Finding.agent_id.in_(chunk), Finding.sensor == "mdm",
                       Finding.status == "open")):
            keys.setdefault(agent_id, set()).add(key)
    return keys


def _event(kind: str, finding: dict[str, Any], now: dt.datetime) -> events.IncomingEvent:
    event_id = str(uuid.uuid4())
    payload = {"id": event_id, "type": kind, "time": now.isoformat(), "finding": finding,
               "reported_by": "connector"}
    return events.IncomingEvent(id=event_id, type=kind,  # type: ignore[arg-type]
                                time=now, finding=finding, payload=payload)


def _machine_id(source: str, device_id: str) -> str:
    machine_id = f"{source}:{device_id}"
    if len(machine_id) > MACHINE_ID_CHARS:
        raise SyncError(f"the MDM's device id {device_id[:60]!r}… is longer than Warden keeps")
    return machine_id


def _new_host(machine_id: str, source: str, kind: str, device: MobileDevice,
              group: str | None, now: dt.datetime) -> Agent:
    # A token nobody holds: a phone never talks to the agent API.
    unusable = hashing.hash_token(hashing.new_token(hashing.AGENT_TOKEN_PREFIX))
    return Agent(id=str(uuid.uuid4()), machine_id=machine_id, token_hash=unusable,
                 agent_version=f"{kind} connector", arch="", enrolled_at=now, source=source,
                 hostname="", os=device.os, os_version="", user="", group=group, last_seen=now)


def _describe(row: Agent, device: MobileDevice, group: str | None, now: dt.datetime) -> None:
    row.hostname = device.name[:255]
    row.os = device.os
    row.os_version = device.os_version[:255]
    row.user = device.user[:255]
    row.arch = device.model[:64]
    row.group = group
    row.last_seen = now
    row.status = {"device": {"model": device.model, "serial": device.serial,
                             "mdm_id": device.id, "apps_known": device.apps_known}}
    if row.retired_at is not None:  # back in the MDM
        row.retired_at = None
        row.revoked_at = None
