"""`warden-agent run`: the service. Detect, act, spool, sync — and survive outages.

Threads, each with one job:
- main: waits for SIGTERM/SIGINT (or the scanner's end), then stops the
  others, waiting for them at most `STOP_BUDGET` seconds in all: a thread
  stuck in a system call (a sensor's read on a dead NFS home) is a daemon
  thread and is left behind, and the spool is closed cleanly all the same;
- scanner: the watch loop (agent.scanning.scanner.Watch) emits finding events; every
  event is written to the spool *before* anything acts on it. Its slow sensors
  scan on workers of their own (agent.scanning.sensor_health), and each sensor's health
  travels in every check-in and the status file;
- actions: notifies the user / terminates (enforce mode) off the detection path,
  and spools what it did;
- sync: enrollment, check-ins, signed policy fetch (agent.uplink.sync.PolicySync);
- upload: spool -> server in gzip batches (agent.uplink.sync.Uploader).

Until the server's signed policy arrives, the agent uses its last-known-good
bundle from the state dir, or — on a first start with no server — the
default policy shipped with it, so it protects from the first second.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import queue
import shlex
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.health import SelfWatchdog, lower_priority
from agent.host.machine import host_facts
from agent.host.platform import current_os, host_context, is_privileged
from agent.prevention.blocker import Blocked
from agent.prevention.guard import ExecGuard
from agent.responding.actions import ActionRunner
from agent.responding.notify import Notifier, make_notifier
from agent.scanning.exceptions import ExceptionKeeper
from agent.scanning.findings import utc_now
from agent.scanning.native_watch import NativeBlockSensor
from agent.scanning.scanner import Watch
from agent.scanning.sensor_health import SensorHealth
from agent.scanning.sensor_set import SensorChoice, Sensors, WatchTiming
from agent.sensors.native_log import native_sources
from agent.settings import AgentSettings
from agent.signals import install_signal_handlers, restore_signal_handlers
from agent.state import BundleRejected, Identity, StateDir
from agent.status_file import StatusFile
from agent.uplink import exceptions as signed_exceptions
from agent.uplink.client import AgentClient
from agent.uplink.events import (
    action_event,
    blocked_exec_events,
    finding_from_event,
    to_server_event,
)
from agent.uplink.request_socket import RequestServer
from agent.uplink.spool import Spool, SpoolError
from agent.uplink.sync import PolicySync, SyncStatus
from agent.uplink.upload import Uploader
from policies.engine import Engine, Finding
from policies.loader import default_bundle
from policies.vocabulary import OsName

log = logging.getLogger("warden.agent")

# Seconds from SIGTERM to exit at most, within the 10 s service managers wait before a
# SIGKILL (systemd's TimeoutStopSec is longer; Windows' service stop is not).
STOP_BUDGET = 7.0

SensorsFactory = Callable[[Engine, SensorChoice, bool, WatchTiming], Sensors]

class AgentDaemon:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        notifier: Notifier | None = None,
        os_name: OsName | None = None,
        choice: SensorChoice | None = None,
        sensors: SensorsFactory = Sensors.build,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        if not settings.server_url:
            raise ValueError("server_url is not set: give WARDEN_AGENT_SERVER_URL or "
                             "`server_url` in the config file")
        self.settings = settings
        self.os_name = os_name or current_os()
        self.state = StateDir(settings.state_dir)
        self.spool = Spool(self.state.spool_path, settings.spool_max_events,
                           settings.spool_max_bytes)
        self.client = AgentClient(settings.server_url, timeout=settings.request_timeout,
                                  ca_bundle=settings.ca_bundle)
        self.status = SyncStatus()
        # Made first: it drops a state dir pinned to a key the configured one does not
        # lead to, before the cached policy is ever used (the agent enrolls again).
        self.sync = PolicySync(self.client, self.state,
                               lambda: host_facts(self.state, self.os_name),
                               settings.resolved_enroll_secret, self._apply_bundle,
                               self._agent_status, self.status,
                               checkin_interval=settings.checkin_interval,
                               on_reachable=self._after_checkin,
                               on_failure=self._agent_status,
                               trusted_key=settings.policy_public_key,
                               take_exceptions=self._take_exceptions)
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.health = SelfWatchdog()
        self._actions: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        # Events waiting for a spool that cannot be written (see _spool).
        self._backlog: collections.deque[
            tuple[dict[str, Any], dict[str, Any] | None, str | None]] = collections.deque(
            maxlen=10_000)
        self._backlog_lock = threading.Lock()
        self._spool_failing = False
        # What `warden-agent status` reads, rewritten after each check-in and upload.
        self.status_file = StatusFile(self.state.path / "status.json", self.status)
        self._bundle = self._initial_bundle()
        self._choice = choice or SensorChoice(
            installed=settings.installed, network=settings.network, content=settings.content,
            content_read_rate=settings.content_read_rate,
            content_max_file_bytes=settings.content_max_file_bytes,
            content_skip_packaged=settings.content_skip_packaged)
        self._timing = WatchTiming.from_settings(settings)
        notifier = notifier or make_notifier(self.os_name,
                                             command=shlex.split(settings.notify_command))
        # Exceptions end by this machine's clock (`clock`), server or no server.
        self.exceptions = ExceptionKeeper(notifier, self._on_exceptions_change,
                                          self.state.path, self._app_name, clock,
                                          signed_exceptions.load_kept(self.state))
        engine = self._engine(self._bundle)
        self.watch = Watch(engine, sensors(engine, self._choice, is_privileged(), self._timing),
                           self._on_event, timing=self._timing, warn=log.warning)
        self.guard = ExecGuard(self._on_blocked, is_privileged())
        # What Santa, AppLocker or fapolicyd blocked, reported like the guard's own blocks.
        self.native = NativeBlockSensor(native_sources(self.os_name), self.state.path
                                        / "native_blocks.json", lambda: self.watch.engine)
        self._stop_requested = False
        self._scanner_failed = False
        self.watch.tracker.seed(Finding(**item) for item in self.spool.open_findings())
        self.action_runner = ActionRunner(notifier,
                                          lambda: self._bundle, self.os_name,
                                          cooldown_seconds=settings.notify_cooldown)
        if self._bundle_is_signed:
            self.status.policy_version = self._bundle["version"]
        self.uploader = Uploader(self.client, self.spool, self._token, self.status,
                                 batch_events=settings.upload_batch_events,
                                 idle_interval=settings.upload_interval,
                                 on_uploaded=self.status_file.refresh)
        # Any local user may ask for an exception; the agent records who asked.
        self.requests = RequestServer(settings.request_socket, self._on_request,
                                      self._known_app) if settings.request_socket else None

    # -- policy ---------------------------------------------------------------

    def _initial_bundle(self) -> dict[str, Any]:
        identity = self.sync.identity
        self._bundle_is_signed = False
        if identity is not None:
            try:
                bundle = self.state.load_policy(identity.policy_public_key)
            except BundleRejected as exc:
                self.status.policy_error = f"cached policy refused: {exc}"
                log.error("%s; using the embedded default until the server sends one",
                          self.status.policy_error)
                bundle = None
            if bundle is not None:
                self._bundle_is_signed = True
                return bundle
        return default_bundle()

    def _engine(self, bundle: dict[str, Any]) -> Engine:
        # The group comes with enrollment; policies may scope rules and exceptions to it.
        identity = self.state.load_identity()
        groups = frozenset({identity.group}) if identity and identity.group else frozenset()
        host = dataclasses.replace(host_context(self.os_name, groups=groups),
                                   granted=self.exceptions.granted())
        return Engine(bundle, host)

    # -- exceptions -------------------------------------------------------------

    def _take_exceptions(self, identity: Identity, signed: Any) -> None:
        signed_exceptions.take(signed, identity, self.state, self.exceptions,
                               self.status.extra)

    def _on_exceptions_change(self, granted: frozenset[str]) -> None:
        self.watch.submit_engine(self._engine(self._bundle))

    def _app_name(self, app: str) -> str:
        return str(self._bundle.get("apps", {}).get(app, {}).get("name", app))

    def _known_app(self, app: str) -> bool:
        return app in self._bundle.get("apps", {})

    def _on_request(self, event: dict[str, Any]) -> None:
        """A person's request from the local socket: durable in the spool, then uploaded."""
        self._spool(event)
        self.uploader.wake.set()

    def _apply_bundle(self, bundle: dict[str, Any]) -> None:
        """Called on the sync thread with a verified bundle; the watch loop switches to it."""
        self._bundle = bundle
        engine = self._engine(bundle)
        self.watch.submit_engine(engine)
        self.guard.update(engine)

    # -- events ---------------------------------------------------------------

    def _spool(self, event: dict[str, Any], opened: dict[str, Any] | None = None,
               resolved: str | None = None) -> None:
        """Append to the spool; while it cannot be written (disk full, read-only), hold
        the events in memory, in order and bounded, and retry on the next event or tick."""
        with self._backlog_lock:
            self._backlog.append((event, opened, resolved))
            self._drain_backlog()

    def _drain_backlog(self) -> None:
        """Move held events to the spool, oldest first; call with _backlog_lock held."""
        try:
            while self._backlog:
                self.spool.append(*self._backlog[0])
                self._backlog.popleft()
        except SpoolError as exc:
            if not self._spool_failing:
                log.error("%s; holding up to %d events in memory until it can be written",
                          exc, self._backlog.maxlen)
            self._spool_failing = True
            return
        if self._spool_failing:
            log.warning("the event spool is writable again; the held events are saved")
            self._spool_failing = False

    def _on_event(self, event: dict[str, Any]) -> None:
        # Durable first: if the agent dies right after, the event is still delivered.
        # The spool also keeps what is open, so a restart resolves what ended
        # meanwhile and does not report what is still there a second time.
        finding = finding_from_event(event)
        if event["event"] == "opened":
            self._spool(to_server_event(event), opened=finding.as_dict())
        else:
            self._spool(to_server_event(event), resolved=finding.key)
        self.uploader.wake.set()
        if event["event"] == "opened":
            try:
                self._actions.put_nowait(event)
            except queue.Full:
                log.error("action queue full; not acting on %s", event["key"])

    def _on_blocked(self, blocked: Blocked) -> None:
        # On the blocker's deciding thread: hand over, never wait (the kernel is waiting).
        try:
            self._actions.put_nowait({"event": "blocked", "blocked": blocked})
        except queue.Full:
            log.error("action queue full; not reporting the blocked exec of %s", blocked.path)

    def _run_actions(self) -> None:
        while True:
            event = self._actions.get()
            if event is None:
                return
            if event["event"] == "blocked":
                finding, results = self.action_runner.blocked(event["blocked"])
                for server_event, opened, resolved in blocked_exec_events(finding, results):
                    self._spool(server_event, opened, resolved)
                self.uploader.wake.set()
                continue
            for result in self.action_runner.handle(finding_from_event(event)):
                self._spool(action_event(event, result))
            self.uploader.wake.set()

    # -- status ---------------------------------------------------------------

    def _token(self) -> str | None:
        identity = self.sync.identity
        return identity.agent_token if identity else None

    def _agent_status(self) -> dict[str, Any]:
        with self._backlog_lock:
            self._drain_backlog()
        health = self.health.check()
        factor = health.backoff_factor
        # The self-watchdog slows the scanner down when the agent itself runs hot.
        self.watch.timing = dataclasses.replace(
            self._timing, process_interval=self._timing.process_interval * factor,
            network_interval=self._timing.network_interval * factor)
        try:
            depth: int | None = self.spool.depth()
            dropped: int | None = self.spool.dropped()
        except SpoolError as exc:
            # Still check in: the server hears that the agent lives, without the counts.
            log.warning("%s", exc)
            depth = dropped = None
        status = {
            "spool_depth": depth,
            "dropped_events": dropped,
            "open_findings": len(self.watch.tracker.open_findings()),
            "cpu_percent": round(health.cpu_percent, 2),
            "rss_bytes": health.rss_bytes,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            # Per sensor: a stuck or failing sensor is said, never silent.
            "sensors": {name: health.as_status()
                        for name, health in self._sensor_health().items()},
        }
        self.status_file.write(status, health.backoff_factor)
        return status

    def _sensor_health(self) -> dict[str, SensorHealth]:
        report = self.watch.health()
        guard = self.guard.health()
        if guard is not None:
            report["block"] = guard
        return report

    def _after_checkin(self) -> None:
        self.uploader.nudge()
        self.status_file.refresh()

    # -- lifecycle ------------------------------------------------------------

    def run(self) -> int:
        lower_priority()
        scanner = threading.Thread(target=self._scan, name="scanner", daemon=True)
        threads = [
            threading.Thread(target=self.sync.run, args=(self.stop_event,), name="sync"),
            threading.Thread(target=self.uploader.run, args=(self.stop_event,), name="upload"),
            threading.Thread(target=self._run_actions, name="actions"),
            threading.Thread(target=self.exceptions.run, args=(self.stop_event,),
                             name="exceptions"),
            threading.Thread(target=self.native.run, args=(self.stop_event, self._on_blocked),
                             name="native-blocks"),
        ]
        if self.requests is not None:
            self.requests.start()
        for thread in threads:
            thread.daemon = True
            thread.start()
        previous = install_signal_handlers(self._request_stop, self.sync.check_in_now)
        try:
            self.guard.update(self.watch.engine)
            scanner.start()
            # The main thread only waits, so a signal is always seen, even with the
            # scanner stuck in a read; a join with a timeout wakes up to look at the flag.
            while scanner.is_alive() and not self._stop_requested:
                scanner.join(Watch.MAX_SLEEP)
        finally:
            restore_signal_handlers(previous)
            self._shut_down(scanner, threads)
        return 1 if self._scanner_failed else 0

    def _scan(self) -> None:
        try:
            self.watch.run()
        except Exception:
            # The service manager restarts an agent that exits in failure; one that
            # checked in while seeing nothing would be the silent failure.
            log.exception("the scanner failed; stopping so that the service restarts")
            self._scanner_failed = True

    def _shut_down(self, scanner: threading.Thread, threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + STOP_BUDGET
        self.watch.stop()
        self.stop_event.set()
        self.uploader.wake.set()
        self.sync.check_in_now()
        self.exceptions.wake()
        if self.requests is not None:
            self.requests.close()
        # A full queue: the actions thread is then left behind, like any stuck thread.
        with contextlib.suppress(queue.Full):
            self._actions.put(None, timeout=1.0)
        self.guard.stop()
        for thread in [scanner, *threads]:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in [scanner, *threads] if thread.is_alive()]
        if stuck:
            log.warning("stopping without the %s thread(s), still busy after %g s (e.g. a "
                        "sensor stuck in a read)", ", ".join(stuck), STOP_BUDGET)
        self.client.close()
        try:
            waiting: int | str = self.spool.depth()
        except SpoolError:
            waiting = "an unknown number of"
        # Under its lock: a stuck thread that wakes later gets a SpoolError, not a torn write.
        self.spool.close()
        log.info("stopped; %s events wait in the spool", waiting)

    def _request_stop(self) -> None:
        # From a signal handler: flags only.
        self._stop_requested = True
        self.watch.request_stop()

    def stop(self) -> None:
        self._stop_requested = True
        self.watch.stop()
