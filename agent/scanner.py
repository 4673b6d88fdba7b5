"""Sensors + engine: one full scan, and the watch loop that keeps findings current.

The loop runs on the caller's thread. It sleeps until the next thing is due:
a process tick (cheap: list pids, read new ones), a network listing (costly,
rate-limited), or an installed-apps rescan, which happens when the install
watcher reports a change and, as a safety net, every few minutes. Before each
network listing it collects the DNS answers that came in and hands out the
look-ups that are due (agent.sensors.dns); it never waits for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.findings import FindingTracker, finding_dict
from agent.sensors.dns import DnsWatch
from agent.sensors.install_watch import InstallWatcher
from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.network import NetworkSensor
from agent.sensors.processes import ProcessChanges, ProcessSensor
from policies.engine import Engine, Finding
from policies.observations import ConnectionObservation, InstalledObservation

if TYPE_CHECKING:
    from agent.settings import AgentSettings

Event = dict[str, Any]


class InstalledSource(Protocol):
    """What the scanner needs from agent.sensors.installed.InstalledAppsSensor."""

    warnings: list[str]

    def scan(self) -> list[InstalledObservation]: ...

    def watch_paths(self) -> list[Path]: ...

    def recursive_watch_paths(self) -> list[Path]: ...


class Watcher(Protocol):
    """What the scanner needs from agent.sensors.install_watch.InstallWatcher."""

    warnings: list[str]

    def start(self) -> None: ...

    def stop(self) -> None: ...


WatcherFactory = Callable[[InstalledSource, Callable[[], None]], Watcher]


@dataclass(frozen=True)
class SensorChoice:
    """Which sensors run, and where installed apps are looked for."""

    processes: bool = True
    installed: bool = True
    network: bool = True
    # Scan a mounted image or a test tree instead of this machine's own files.
    root: Path = Path("/")


@dataclass(frozen=True)
class WatchTiming:
    """Seconds between the loop's chores; the defaults mirror AgentSettings'."""

    # A quiet tick is one small read (see ProcessSensor.poll), so ticking four
    # times a second keeps detection well under a second for next to no CPU.
    process_interval: float = 0.25
    # The safety net for what ticks cannot see (an old process exec'ing another).
    process_rescan_interval: float = 300.0
    network_interval: float = 10.0
    installed_rescan_interval: float = 3600.0
    # How often the policy's domains are looked up again; 0: never (no DNS correlation).
    dns_refresh_interval: float = 900.0

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> WatchTiming:
        return cls(process_interval=settings.process_interval,
                   network_interval=settings.network_interval,
                   installed_rescan_interval=settings.installed_rescan_interval,
                   dns_refresh_interval=settings.dns_refresh_interval)


@dataclass
class Sensors:
    processes: ProcessSensor | None = None
    installed: InstalledSource | None = None
    network: NetworkSensor | None = None
    # Names the network sensor's connections after the policy's domains.
    dns: DnsWatch | None = None

    @classmethod
    def build(
        cls, engine: Engine, choice: SensorChoice, privileged: bool,
        timing: WatchTiming | None = None,
    ) -> Sensors:
        timing = timing or WatchTiming()
        sensors = cls()
        if choice.processes:
            sensors.processes = ProcessSensor(hash_exes=engine.needs_sha256, privileged=privileged)
        if choice.installed:
            sensors.installed = InstalledAppsSensor(
                root=choice.root,
                os_name=engine.host.os,
                marker_files=engine.folder_marker_files,
                marker_globs=engine.folder_marker_globs,
            )
        if choice.network:
            sensors.network = NetworkSensor(timing.network_interval, privileged=privileged)
            if timing.dns_refresh_interval > 0:
                sensors.dns = DnsWatch(refresh_interval=timing.dns_refresh_interval)
        return sensors


@dataclass
class ScanResult:
    findings: list[Finding]
    warnings: list[str]
    policy_version: str

    @property
    def denied(self) -> bool:
        return any(finding.verdict == "deny" for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {"findings": [finding_dict(finding) for finding in self.findings],
                "warnings": self.warnings, "policy_version": self.policy_version}


def scan_once(engine: Engine, sensors: Sensors) -> ScanResult:
    """Every enabled sensor, one full pass each."""
    findings: list[Finding] = []
    warnings: list[str] = []
    dns = sensors.dns if sensors.network is not None else None
    if dns is not None:
        dns.update(engine.resolvable_domains)  # answered while the other sensors scan
    if sensors.processes is not None:
        findings += engine.evaluate_all(sensors.processes.scan())
        warnings += sensors.processes.warnings()
    if sensors.installed is not None:
        findings += engine.evaluate_all(sensors.installed.scan())
        warnings += sensors.installed.warnings
    if sensors.network is not None:
        hosts: dict[str, str] = {}
        if dns is not None:
            dns.wait(dns.timeout)
            hosts = dns.update(engine.resolvable_domains)
            warnings += dns.warnings
        connections = sensors.network.scan(wanted=_matcher(engine), hosts=hosts)
        if connections is not None:
            findings += engine.evaluate_all(connections)
        warnings += sensors.network.warnings
    return ScanResult(findings, warnings, engine.version)


def _matcher(engine: Engine) -> Callable[[ConnectionObservation], bool]:
    """Whether a connection matters to the policy: only those get their owner looked up."""
    def wanted(observation: ConnectionObservation) -> bool:
        return bool(engine.evaluate(observation))

    return wanted


def _default_watcher(source: InstalledSource, on_change: Callable[[], None]) -> Watcher:
    return InstallWatcher(source.watch_paths(), on_change,
                          recursive=source.recursive_watch_paths())


@dataclass
class _Schedule:
    process: float = 0.0
    process_rescan: float = 0.0
    installed: float = 0.0


class Watch:
    """Keeps findings current and hands each opened/resolved event to `emit`."""

    # Upper bound on one sleep, so a stop requested from a signal handler (which
    # may only set a flag) is honoured promptly even with the process sensor off.
    MAX_SLEEP = 0.5

    def __init__(
        self,
        engine: Engine,
        sensors: Sensors,
        emit: Callable[[Event], None],
        *,
        timing: WatchTiming | None = None,
        warn: Callable[[str], None] = lambda message: None,
        tracker: FindingTracker | None = None,
        clock: Callable[[], float] = time.monotonic,
        watcher_factory: WatcherFactory = _default_watcher,
    ) -> None:
        self.engine = engine
        self.sensors = sensors
        self.tracker = tracker or FindingTracker()
        self.timing = timing or WatchTiming()
        self._emit = emit
        self._warn = warn
        self._warned: set[str] = set()
        self._clock = clock
        self._watcher_factory = watcher_factory
        self._watcher: Watcher | None = None
        self._wake = threading.Event()
        self._installed_changed = threading.Event()
        self._stopping = False
        self._due = _Schedule()
        self._pending_lock = threading.Lock()
        self._pending_engine: Engine | None = None

    # -- control ------------------------------------------------------------

    def run(self) -> None:
        """Scan everything, then follow changes until `stop` (or `request_stop`)."""
        try:
            self.start()
            self.run_loop()
        finally:
            self.close()

    def run_loop(self) -> None:
        """Follow changes (after `start`) until stopped."""
        while not self._stopping:
            self._wake.wait(self._sleep_time())
            self._wake.clear()
            if self._stopping:
                break
            self.step()

    def start(self) -> None:
        now = self._clock()
        sensors, timing = self.sensors, self.timing
        if sensors.processes is not None:
            self._publish(self.tracker.replace(
                "process", self.engine.evaluate_all(sensors.processes.scan())))
            self._due.process = now + timing.process_interval
            self._due.process_rescan = now + timing.process_rescan_interval
        if sensors.installed is not None:
            # Watch first, then scan: an install landing in between is then
            # rescanned for, not missed until the safety-net rescan.
            self._watcher = self._watcher_factory(sensors.installed, self._on_installed_change)
            self._watcher.start()
            self._scan_installed(now)
        if sensors.network is not None:
            self._scan_network()
        self._report_warnings()

    def step(self) -> None:
        """Do whatever is due now."""
        with self._pending_lock:
            engine, self._pending_engine = self._pending_engine, None
        if engine is not None:
            self.set_engine(engine)
        now = self._clock()
        sensors, due = self.sensors, self._due
        if sensors.network is not None:
            # `timing` may be changed while running (e.g. slowed down under load);
            # the sensor keeps the rate limit, so hand it the current interval.
            sensors.network.min_interval = self.timing.network_interval
        if sensors.installed is not None and (
                self._installed_changed.is_set() or now >= due.installed):
            self._installed_changed.clear()
            self._scan_installed(now)
        if sensors.processes is not None:
            if now >= due.process_rescan:
                self._publish_processes(sensors.processes.rescan())
                due.process_rescan = now + self.timing.process_rescan_interval
                due.process = now + self.timing.process_interval
            elif now >= due.process:
                verify = self.tracker.open_pids("process")
                self._publish_processes(sensors.processes.poll(verify))
                due.process = now + self.timing.process_interval
        if sensors.network is not None and sensors.network.due():
            self._scan_network()

    def stop(self) -> None:
        """Stop the loop from any thread."""
        self._stopping = True
        self._wake.set()

    def request_stop(self) -> None:
        """Stop from a signal handler: only a flag, since taking a lock there can deadlock."""
        self._stopping = True

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self.sensors.dns is not None:
            self.sensors.dns.close()

    def submit_engine(self, engine: Engine) -> None:
        """Switch policy from any thread: the loop applies it (`set_engine`) at once."""
        with self._pending_lock:
            self._pending_engine = engine
        self._wake.set()

    def set_engine(self, engine: Engine) -> None:
        """Switch to a new policy on the loop's thread: re-judge what is known now."""
        self.engine = engine
        sensors = self.sensors
        if sensors.processes is not None:
            sensors.processes.set_hash_exes(engine.needs_sha256)
            self._publish(self.tracker.replace(
                "process", engine.evaluate_all(sensors.processes.observations())))
        now = self._clock()
        if sensors.installed is not None:
            self._scan_installed(now)
        if sensors.network is not None:
            self._scan_network()

    # -- internals ----------------------------------------------------------

    def _sleep_time(self) -> float:
        due = self._due
        sensors = self.sensors
        deadlines = [self._clock() + self.MAX_SLEEP]
        if sensors.processes is not None:
            deadlines += [due.process, due.process_rescan]
        if sensors.network is not None:
            deadlines.append(sensors.network.next_due())
        if sensors.installed is not None:
            deadlines.append(due.installed)
        return max(0.0, min(deadlines) - self._clock())

    def _on_installed_change(self) -> None:
        # Called on the watcher's thread: only flag it; the scan runs on ours.
        self._installed_changed.set()
        self._wake.set()

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._emit(event)

    def _publish_processes(self, changes: ProcessChanges) -> None:
        if changes.new or changes.gone:
            findings = self.engine.evaluate_all(changes.new)
            self._publish(self.tracker.update("process", findings, changes.gone))

    def _scan_installed(self, now: float) -> None:
        assert self.sensors.installed is not None
        observations = self.sensors.installed.scan()
        self._publish(self.tracker.replace("installed", self.engine.evaluate_all(observations)))
        self._report(self.sensors.installed.warnings)
        self._due.installed = now + self.timing.installed_rescan_interval

    def _scan_network(self) -> None:
        # The sensor keeps its own rate limit (WatchTiming.network_interval, set when
        # it was built); this only asks.
        assert self.sensors.network is not None
        dns = self.sensors.dns
        hosts = dns.update(self.engine.resolvable_domains) if dns is not None else {}
        connections = self.sensors.network.scan(wanted=_matcher(self.engine), hosts=hosts)
        if connections is not None:
            self._publish(self.tracker.replace("network", self.engine.evaluate_all(connections)))
        self._report(self.sensors.network.warnings)
        if dns is not None:
            self._report(dns.warnings)

    def _report_warnings(self) -> None:
        """Everything that could not be seen at start; later, new sensor warnings only.

        The process sensor's count of uninspectable processes drifts as
        processes come and go; it is said once, not every time it changes.
        """
        if self.sensors.processes is not None:
            self._report(self.sensors.processes.warnings())
        if self._watcher is not None:
            self._report(self._watcher.warnings)

    def _report(self, messages: list[str]) -> None:
        for message in messages:
            if message not in self._warned:
                self._warned.add(message)
                self._warn(message)
