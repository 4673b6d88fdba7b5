"""Which sensors run, how often, and how long one scan may take: what the scanner is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from agent.scanning.sensor_health import SensorHealth
from agent.sensors.content import (
    MAX_FILE_BYTES,
    READ_BURST,
    READ_RATE,
    ContentIdentifier,
    ReadBudget,
)
from agent.sensors.dns import DnsWatch
from agent.sensors.exec_events import ExecEvents
from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.network import NetworkSensor
from agent.sensors.package_vouch import DpkgVouch
from agent.sensors.processes import ProcessSensor
from policies.content_match import ContentMatcher
from policies.engine import Engine
from policies.observations import InstalledObservation, ProcessObservation
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
    # Identify executables by their content (running ones, and at rest in the places
    # users keep portable apps) when the policy has content signatures.
    content: bool = True
    content_read_rate: float = READ_RATE
    content_max_file_bytes: int = MAX_FILE_BYTES
    # Do not read programs the package database vouches for (agent/sensors/package_vouch.py).
    content_skip_packaged: bool = True
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
    # Set when executables are identified by content: how (SensorChoice.content).
    content: SensorChoice | None = None
    # The package database's index, kept across policy updates (package_vouch.py).
    vouch: DpkgVouch | None = None

    @classmethod
    def build(
        cls, engine: Engine, choice: SensorChoice, privileged: bool,
        timing: WatchTiming | None = None,
    ) -> Sensors:
        timing = timing or WatchTiming()
        sensors = cls(content=choice if choice.content else None)
        content = None
        if choice.content and engine.has_content_signatures:
            if choice.content_skip_packaged and engine.host.os == "linux":
                # Built before any scan starts, so no scan's deadline pays for it.
                sensors.vouch = DpkgVouch(choice.root).load()
            content = content_identifier(engine, choice, sensors.vouch)
        if choice.processes:
            sensors.processes = ProcessSensor(
                hash_exes=engine.needs_sha256, privileged=privileged,
                content=content, identified=already_identified(engine))
            if choice.exec_events:
                sensors.exec_events = ExecEvents()
        if choice.installed:
            sensors.installed = InstalledAppsSensor(
                root=choice.root,
                # An agent's engine always runs as its own OS (phones have no agent).
                os_name=cast(OsName, engine.host.os),
                marker_files=engine.folder_marker_files,
                marker_globs=engine.folder_marker_globs,
                content=content,
            )
        if choice.network:
            sensors.network = NetworkSensor(timing.network_interval, privileged=privileged)
            if timing.dns_refresh_interval > 0:
                sensors.dns = DnsWatch(refresh_interval=timing.dns_refresh_interval)
        return sensors


def content_identifier(engine: Engine, choice: SensorChoice, vouch: DpkgVouch | None = None
                       ) -> ContentIdentifier | None:
    """A reader of executables for the policy's content signatures; None when it has none.
    `vouch`: the package index to reuse (one is made when packaged files are skipped)."""
    if not engine.has_content_signatures:
        return None
    codesign = None
    if engine.host.os == "macos":
        from agent.sensors.installed_macos import run_codesign

        codesign = run_codesign
    if vouch is None and choice.content_skip_packaged and engine.host.os == "linux":
        vouch = DpkgVouch(choice.root)
    return ContentIdentifier(
        # An agent's engine always runs as its own OS (phones have no agent).
        ContentMatcher(engine.apps, cast(OsName, engine.host.os)), codesign=codesign,
        vouch=vouch,
        budget=ReadBudget(rate=choice.content_read_rate,
                          burst=max(READ_BURST, choice.content_read_rate)),
        max_file_bytes=choice.content_max_file_bytes)


def already_identified(engine: Engine) -> Callable[[ProcessObservation], bool]:
    """Whether the policy names a process without reading its executable (name, path...)."""
    def named(observation: ProcessObservation) -> bool:
        return bool(engine.evaluate(observation, include_allowed=True))

    return named
