"""Which sensors run, how often, and how long one scan may take: what the scanner is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from agent.scanning.sensor_health import SensorHealth
from agent.sensors.dns import DnsWatch
from agent.sensors.exec_events import ExecEvents
from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.network import NetworkSensor
from agent.sensors.processes import ProcessSensor
from policies.engine import Engine
from policies.observations import InstalledObservation
from policies.vocabulary import OsName

if TYPE_CHECKING:
    from agent.settings import AgentSettings


class InstalledSource(Protocol):
    """What the scanner needs from agent.sensors.installed.InstalledAppsSensor (and what
    the stuck sensors of tests/agent/stuck_sensors.py provide in its place)."""

    warnings: list[str]

    def scan(self) -> list[InstalledObservation]: ...

    def watch_paths(self) -> list[Path]: ...

    def recursive_watch_paths(self) -> list[Path]: ...


class ExecSource(Protocol):
    """What the scanner needs from agent.sensors.exec_events.ExecEvents."""

    def start(self, on_exec: Callable[[int], None], on_lost: Callable[[], None]) -> bool: ...

    def stop(self) -> None: ...

    def health(self) -> SensorHealth: ...


@dataclass(frozen=True)
class SensorChoice:
    """Which sensors run, and where installed apps are looked for."""

    processes: bool = True
    # Kernel exec events speed the process sensor up where they work (Linux, root).
    exec_events: bool = True
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
    # How long one scan of one sensor may run before that sensor is reported stalled
    # (agent.scanning.sensor_health); a healthy scan takes milliseconds to a few seconds.
    sensor_deadline: float = 60.0

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> WatchTiming:
        return cls(process_interval=settings.process_interval,
                   network_interval=settings.network_interval,
                   installed_rescan_interval=settings.installed_rescan_interval,
                   dns_refresh_interval=settings.dns_refresh_interval,
                   sensor_deadline=settings.sensor_deadline)


@dataclass
class Sensors:
    processes: ProcessSensor | None = None
    # Pushes each exec's pid to the process sensor (None: polling alone).
    exec_events: ExecSource | None = None
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
            if choice.exec_events:
                sensors.exec_events = ExecEvents()
        if choice.installed:
            sensors.installed = InstalledAppsSensor(
                root=choice.root,
                # An agent's engine always runs as its own OS (phones have no agent).
                os_name=cast(OsName, engine.host.os),
                marker_files=engine.folder_marker_files,
                marker_globs=engine.folder_marker_globs,
            )
        if choice.network:
            sensors.network = NetworkSensor(timing.network_interval, privileged=privileged)
            if timing.dns_refresh_interval > 0:
                sensors.dns = DnsWatch(refresh_interval=timing.dns_refresh_interval)
        return sensors
