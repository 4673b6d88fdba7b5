"""One full pass of every sensor (`warden-agent scan`), each bounded by its deadline.

The sensors scan side by side on workers (agent.scanning.sensor_health); the pass waits
for each at most its deadline. A sensor still scanning then is reported
`stalled` (and one that raised, `error`) next to the findings of the others,
which are printed all the same: a stuck package database must not hide a
running Telegram.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.scanning.findings import finding_dict
from agent.scanning.sensor_health import SensorHealth, SensorWorker, describe_error
from agent.scanning.sensor_set import Sensors, WatchTiming
from policies.engine import Engine, Finding
from policies.observations import ConnectionObservation

T = TypeVar("T")


@dataclass
class ScanResult:
    findings: list[Finding]
    warnings: list[str]
    policy_version: str
    # Sensor name -> how its scan went; a stalled sensor's findings are missing.
    sensors: dict[str, SensorHealth] = field(default_factory=dict)

    @property
    def denied(self) -> bool:
        return any(finding.verdict == "deny" for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {"findings": [finding_dict(finding) for finding in self.findings],
                "warnings": self.warnings, "policy_version": self.policy_version,
                "sensors": {name: health.as_status() for name, health in self.sensors.items()}}


def matcher(engine: Engine) -> Callable[[ConnectionObservation], bool]:
    """Whether a connection matters to the policy: only those get their owner looked up."""
    def wanted(observation: ConnectionObservation) -> bool:
        return bool(engine.evaluate(observation))

    return wanted


class _Pass:
    """The workers of one pass, and what each brought back in time."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.health: dict[str, SensorHealth] = {}
        self._running: list[tuple[str, SensorWorker[Any], float]] = []

    def start(self, name: str, job: Callable[[], T]) -> None:
        worker: SensorWorker[T] = SensorWorker(name, self.deadline, lambda: None)
        worker.submit(job)
        self._running.append((name, worker, time.monotonic() + self.deadline))

    def results(self) -> dict[str, Any]:
        """Each sensor's value (None when it stalled or failed); health is filled in."""
        values: dict[str, Any] = {}
        for name, worker, until in self._running:
            done = worker.wait(max(0.0, until - time.monotonic()))
            worker.close()
            if done is None:
                self.health[name] = SensorHealth("stalled", None, (
                    f"its scan did not return within the {self.deadline:g} s deadline; "
                    "what it would have found is missing"))
            else:
                self.health[name] = worker.record.health()
                values[name] = done.value
        return values


def scan_once(engine: Engine, sensors: Sensors,
              deadline: float = WatchTiming.sensor_deadline) -> ScanResult:
    """Every enabled sensor, one full pass each, none waited for longer than `deadline`."""
    findings: list[Finding] = []
    warnings: list[str] = []
    work = _Pass(deadline)
    processes, installed, network = sensors.processes, sensors.installed, sensors.network
    dns = sensors.dns if network is not None else None
    if dns is not None:
        dns.update(engine.resolvable_domains)  # answered while the other sensors scan
    if processes is not None:
        work.start("process", processes.scan)
    if installed is not None:
        work.start("installed", installed.scan)
    if network is not None:
        hosts: dict[str, str] = {}
        if dns is not None:
            dns.wait(dns.timeout)
            try:
                hosts = dns.update(engine.resolvable_domains)
            except Exception as exc:  # DNS is a help to the network sensor, never its end
                work.health["dns"] = SensorHealth("error", None, describe_error(exc))
            warnings += dns.warnings
            work.health.setdefault("dns", dns.health())
        work.start("network", lambda: network.scan(wanted=matcher(engine), hosts=hosts))
    values = work.results()
    if "process" in values and processes is not None:
        findings += engine.evaluate_all(values["process"])
        warnings += processes.warnings()
    if "installed" in values and installed is not None:
        findings += engine.evaluate_all(values["installed"])
        warnings += installed.warnings
    if values.get("network") is not None and network is not None:
        findings += engine.evaluate_all(values["network"])
    if "network" in values and network is not None:
        warnings += network.warnings
    warnings += [f"the {name} sensor is {health.state}: {health.detail}"
                 for name, health in work.health.items() if health.state != "ok"]
    return ScanResult(findings, warnings, engine.version, work.health)
