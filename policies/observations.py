"""What the agent's sensors see, as plain immutable values.

Observations carry their own identity so that a finding keyed on it can be
opened once and resolved when the thing goes away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# How a sensor's scans are going, as the agent reports it at check-in: `stalled` when
# a scan runs past its deadline, `error` when the last one raised.
SensorState = Literal["ok", "stalled", "error"]

InstallSource = Literal[
    "deb",
    "rpm",
    "snap",
    "flatpak",
    "desktop",
    "app_bundle",
    "windows_uninstall",
    "msix",
    "winget",
    "homebrew",
    "folder",
    # An executable at rest, known by its content (agent/sensors/content.py).
    "file",
]


@dataclass(frozen=True, slots=True)
class ProcessObservation:
    pid: int
    name: str
    create_time: float = 0.0
    exe: str | None = None
    cmdline: tuple[str, ...] = ()
    username: str | None = None
    sha256: str | None = None
    ppid: int | None = None
    # Content signatures the executable matched, as "<app>/<signature id>".
    content: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        # pid alone is reused by the kernel; pid + start time is not.
        return f"pid:{self.pid}:{self.create_time:.2f}"


@dataclass(frozen=True, slots=True)
class InstalledObservation:
    source: InstallSource
    # package name, snap name, flatpak id, .desktop file name, bundle id,
    # uninstall key name, package family name, winget/brew id or folder path.
    id: str
    path: str | None = None
    version: str | None = None
    user: str | None = None
    display_name: str | None = None
    publisher: str | None = None
    team_id: str | None = None
    # For "folder": the names of the files directly inside it.
    contents: frozenset[str] = field(default_factory=frozenset)
    # For "file": the content signatures it matched, as "<app>/<signature id>".
    content: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        return f"{self.source}:{self.id}:{self.path or ''}"


@dataclass(frozen=True, slots=True)
class ConnectionObservation:
    remote_ip: str
    remote_port: int
    local_ip: str = ""
    local_port: int = 0
    protocol: Literal["tcp", "udp"] = "tcp"
    pid: int | None = None
    process_name: str | None = None
    # A host name, when the sensor knows one (e.g. from a proxy log or the CLI).
    remote_host: str | None = None
    # remote_host was not seen on the connection but inferred: remote_ip was among
    # the agent's own DNS answers for it (agent.sensors.dns). Weaker evidence,
    # since an address can serve many names (CDNs).
    host_from_dns: bool = False

    @property
    def identity(self) -> str:
        # An inferred name may change with the next DNS answers; the connection
        # stays the same one, so it keeps its address as its identity.
        remote = self.remote_ip if self.host_from_dns else self.remote_host or self.remote_ip
        return (
            f"conn:{self.protocol}:{self.local_ip}:{self.local_port}->"
            f"{remote}:{self.remote_port}:{self.pid}"
        )


Observation = ProcessObservation | InstalledObservation | ConnectionObservation
