"""The watch loop that keeps findings current.

The loop sleeps until the next thing is due: a process tick (cheap: list pids,
read new ones), a network listing (costly, rate-limited), or an installed-apps
rescan, which happens when the install watcher reports a change and, as a
safety net, every few minutes. The process tick runs on the loop's thread; the
network listing and the installed-apps scan run on a worker each
(agent.scanning.sensor_health), so a sensor stuck in a read delays nothing else: the
loop hands a scan over, keeps ticking, and publishes the result when the
worker wakes it. Before each network listing it collects the DNS answers that
came in and hands out the look-ups that are due (agent.sensors.dns); it never
waits for them either.

`health()`, callable from any thread, says per sensor whether it is `ok`,
`stalled` (a scan past its deadline) or `error` (the last scan raised).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.host.memory import release_free_memory
from agent.scanning.findings import FindingTracker
from agent.scanning.one_scan import matcher
from agent.scanning.sensor_health import ScanRecord, SensorHealth, SensorWorker, describe_error
from agent.scanning.sensor_set import (
    Sensors,
    WatchTiming,
    already_identified,
    content_identifier,
)
from agent.sensors.install_watch import InstallWatcher
from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.package_vouch import DpkgVouch
from agent.sensors.processes import ProcessChanges
from policies.engine import Engine
from policies.observations import ConnectionObservation, InstalledObservation

Event = dict[str, Any]
# Exec'd pids waiting for the loop; past this, one full rescan replaces them.
MAX_QUEUED_EXECS = 10_000


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
    ) -> None:
        self.engine = engine
        self.sensors = sensors
        self.tracker = tracker or FindingTracker()
        self.timing = timing or WatchTiming()
        self._emit = emit
        self._warn = warn
        self._warned: set[str] = set()
        self._clock = clock
        self._watcher: InstallWatcher | None = None
        self._wake = threading.Event()
        self._installed_changed = threading.Event()
        self._stopping = False
        self._due = _Schedule()
        self._pending_lock = threading.Lock()
        self._pending_engine: Engine | None = None
        deadline = self.timing.sensor_deadline
        self._process_record = ScanRecord(deadline, clock)
        self._installed: SensorWorker[list[InstalledObservation]] | None = None
        self._network: SensorWorker[list[ConnectionObservation] | None] | None = None
        if sensors.installed is not None:
            self._installed = SensorWorker("installed", deadline, self._wake.set, clock)
        if sensors.network is not None:
            self._network = SensorWorker("network", deadline, self._wake.set, clock)
        # A scan asked for while the sensor's worker was busy: started when it is free.
        self._want_installed = False
        self._want_network = False
        # DnsWatch is touched on the loop's thread only: its health is copied out here.
        self._dns_health: SensorHealth | None = None
        self._said: dict[str, str] = {}
        # Pids the exec-events thread saw exec, read and judged on this thread.
        self._exec_lock = threading.Lock()
        self._exec_pids: list[int] = []
        self._exec_lost = False

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
        """Start every sensor's first scan; the slow ones report back through `step`."""
        now = self._clock()
        sensors, timing = self.sensors, self.timing
        if sensors.installed is not None:
            # Watch first, then scan: an install landing in between is then
            # rescanned for, not missed until the safety-net rescan.
            self._watcher = InstallWatcher(sensors.installed.watch_paths(),
                                           self._on_installed_change,
                                           recursive=sensors.installed.recursive_watch_paths())
            self._watcher.start()
            self._want_installed = True
        self._want_network = sensors.network is not None
        self._start_slow_scans(now)
        if sensors.processes is not None:
            processes = sensors.processes
            if sensors.exec_events is not None:
                # Listen first, then list: a process started in between is then seen twice
                # (harmless), never missed until the next tick.
                sensors.exec_events.start(self._on_exec, self._on_exec_lost)
            self._process_tick(lambda: self._publish(self.tracker.replace(
                "process", self.engine.evaluate_all(processes.scan()))))
            self._due.process = now + timing.process_interval
            self._due.process_rescan = now + timing.process_rescan_interval
        self._report_warnings()
        self._say_health()

    def step(self) -> None:
        """Do whatever is due now, and take in what the slow sensors brought back."""
        with self._pending_lock:
            engine, self._pending_engine = self._pending_engine, None
        if engine is not None:
            self.set_engine(engine)
        self._take_slow_scans()
        now = self._clock()
        processes, due = self.sensors.processes, self._due
        if processes is not None:
            with self._exec_lock:
                pids, self._exec_pids = self._exec_pids, []
                lost, self._exec_lost = self._exec_lost, False
            if lost:
                due.process_rescan = now  # the kernel dropped exec events: look at everything
            elif pids:
                self._process_tick(lambda: self._publish_processes(processes.exec_seen(pids)))
            if now >= due.process_rescan:
                self._process_tick(lambda: self._publish_processes(processes.rescan()))
                due.process_rescan = now + self.timing.process_rescan_interval
                due.process = now + self.timing.process_interval
            elif now >= due.process:
                verify = self.tracker.open_pids("process")
                self._process_tick(lambda: self._publish_processes(processes.poll(verify)))
                due.process = now + self.timing.process_interval
        if self._installed_changed.is_set() or now >= due.installed:
            self._installed_changed.clear()
            self._want_installed = self.sensors.installed is not None
        if self.sensors.network is not None and self.sensors.network.due():
            self._want_network = True
        self._start_slow_scans(now)
        self._say_health()

    def stop(self) -> None:
        """Stop the loop from any thread."""
        self._stopping = True
        self._wake.set()

    def request_stop(self) -> None:
        """Stop from a signal handler: only a flag, since taking a lock there can deadlock."""
        self._stopping = True

    def close(self) -> None:
        if self.sensors.exec_events is not None:
            self.sensors.exec_events.stop()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self.sensors.dns is not None:
            self.sensors.dns.close()
        for worker in (self._installed, self._network):
            if worker is not None:
                worker.close()

    def submit_engine(self, engine: Engine) -> None:
        """Switch policy from any thread: the loop applies it (`set_engine`) at once."""
        with self._pending_lock:
            self._pending_engine = engine
        self._wake.set()

    def set_engine(self, engine: Engine) -> None:
        """Switch to a new policy on the loop's thread: re-judge what is known now."""
        self.engine = engine
        processes = self.sensors.processes
        choice = self.sensors.content
        if choice is not None and self.sensors.vouch is None and choice.content_skip_packaged \
                and engine.host.os == "linux" and engine.has_content_signatures:
            self.sensors.vouch = DpkgVouch(choice.root)  # the first policy had no signature
        content = content_identifier(engine, choice, self.sensors.vouch) \
            if choice is not None else None
        if isinstance(self.sensors.installed, InstalledAppsSensor) and choice is not None:
            self.sensors.installed.content = content
        if processes is not None:
            processes.set_hash_exes(engine.needs_sha256)
            if choice is not None:
                processes.set_content(content, already_identified(engine))
            self._process_tick(lambda: self._publish(self.tracker.replace(
                "process", engine.evaluate_all(processes.observations()))))
        # A scan in flight was judged by the old policy: another follows when it returns.
        self._want_installed = self.sensors.installed is not None
        self._want_network = self.sensors.network is not None
        self._start_slow_scans(self._clock())
        release_free_memory()  # the old policy's engine, matcher and their build

    def health(self) -> dict[str, SensorHealth]:
        """Each running sensor's health now; callable from any thread."""
        report: dict[str, SensorHealth] = {}
        if self.sensors.processes is not None:
            report["process"] = self._process_record.health()
            if self.sensors.exec_events is not None:
                report["exec"] = self.sensors.exec_events.health()
        if self._installed is not None:
            report["installed"] = self._installed.record.health()
        if self._network is not None:
            report["network"] = self._network.record.health()
        if self._dns_health is not None:
            report["dns"] = self._dns_health
        return report

    # -- internals ----------------------------------------------------------

    def _sleep_time(self) -> float:
        due = self._due
        sensors = self.sensors
        deadlines = [self._clock() + self.MAX_SLEEP]
        if sensors.processes is not None:
            deadlines += [due.process, due.process_rescan]
        # A busy worker wakes the loop when it returns; until then its sensor is not due.
        if sensors.network is not None and self._network is not None \
                and not self._network.busy:
            deadlines.append(sensors.network.next_due())
        if self._installed is not None and not self._installed.busy:
            deadlines.append(due.installed)
        return max(0.0, min(deadlines) - self._clock())

    def _on_exec(self, pid: int) -> None:
        # Called on the exec-events thread: queue the pid; the loop reads it at once.
        with self._exec_lock:
            if len(self._exec_pids) < MAX_QUEUED_EXECS:
                self._exec_pids.append(pid)
            else:  # a loop this far behind gains nothing from a longer list: rescan instead
                self._exec_pids.clear()
                self._exec_lost = True
        self._wake.set()

    def _on_exec_lost(self) -> None:
        with self._exec_lock:
            self._exec_lost = True
        self._wake.set()

    def _on_installed_change(self) -> None:
        # Called on the watcher's thread: only flag it; the scan runs on its worker.
        self._installed_changed.set()
        self._wake.set()

    def _process_tick(self, tick: Callable[[], None]) -> None:
        """One process scan on this thread, recorded so that a stuck one shows as stalled."""
        self._process_record.started()
        try:
            tick()
        except Exception as exc:  # the loop must live on: the other sensors still work
            self._process_record.finished(describe_error(exc))
        else:
            self._process_record.finished()

    def _start_slow_scans(self, now: float) -> None:
        installed, network = self.sensors.installed, self.sensors.network
        if self._want_installed and installed is not None and self._installed is not None \
                and self._installed.submit(installed.scan):
            self._want_installed = False
            self._due.installed = now + self.timing.installed_rescan_interval
        if self._want_network and network is not None and self._network is not None \
                and not self._network.busy:
            # `timing` may be changed while running (e.g. slowed down under load);
            # the sensor keeps the rate limit, so hand it the current interval.
            network.min_interval = self.timing.network_interval
            dns = self.sensors.dns
            hosts = dns.update(self.engine.resolvable_domains) if dns is not None else {}
            if dns is not None:
                self._dns_health = dns.health()
                self._report(dns.warnings)
            wanted = matcher(self.engine)
            self._network.submit(lambda: network.scan(wanted=wanted, hosts=hosts))
            self._want_network = False

    def _take_slow_scans(self) -> None:
        if self._installed is not None and self.sensors.installed is not None:
            done = self._installed.take()
            if done is not None and done.value is not None:
                self._publish(self.tracker.replace(
                    "installed", self.engine.evaluate_all(done.value)))
                self._report(self.sensors.installed.warnings)
            if done is not None:
                # The scan read files and listed folders: what it freed goes back now,
                # not when the allocator next happens to reach the top of its heap.
                release_free_memory()
        if self._network is not None and self.sensors.network is not None:
            listed = self._network.take()
            # None is "could not list": keep what was known rather than resolve it all.
            if listed is not None and listed.value is not None:
                self._publish(self.tracker.replace(
                    "network", self.engine.evaluate_all(listed.value)))
            if listed is not None:
                self._report(self.sensors.network.warnings)

    def _say_health(self) -> None:
        """Log each change of a sensor's health, once (the check-in carries it too)."""
        for name, health in self.health().items():
            if self._said.get(name, "ok") != health.state:
                self._warn(f"the {name} sensor is {health.state}"
                           + (f": {health.detail}" if health.detail else " again"))
            self._said[name] = health.state

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._emit(event)

    def _publish_processes(self, changes: ProcessChanges) -> None:
        if changes.new or changes.gone:
            findings = self.engine.evaluate_all(changes.new)
            self._publish(self.tracker.update("process", findings, changes.gone))

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
