"""What the agent's sensors see, as plain immutable values.

Observations carry their own identity so that a finding keyed on it can be
opened once and resolved when the thing goes away.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

# A finding key's longest form on the wire (policies.wire.FindingInfo.key).
MAX_KEY_CHARS = 512


def finding_key(app: str, sensor: str, identity: str) -> str:
    """`app|sensor|identity`, the same for the same thing seen, and never longer than the
    wire allows: an identity that would make it longer (a folder's path can be 4 KiB) is
    replaced by its SHA-256, so one long path cannot get an agent's reports refused."""
    key = f"{app}|{sensor}|{identity}"
    if len(key) <= MAX_KEY_CHARS:
        return key
    return f"{app}|{sensor}|sha256:{hashlib.sha256(identity.encode()).hexdigest()}"

# How a sensor's scans are going, as the agent reports it at check-in: `stalled` when
# a scan runs past its deadline, `error` when the last one raised, `fallback` when it
# cannot run on this machine and a slower sensor covers for it (the detail says which).
SensorState = Literal["ok", "stalled", "error", "fallback"]

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


@dataclass(frozen=True, slots=True)
class MobileAppObservation:
    """One app an MDM lists on one managed phone or tablet (server.connectors)."""

    # The connector's name and the device's id in its MDM: a finding's identity.
    connector: str
    device_id: str
    platform: str  # ios, ipados, android (the device's OS as the connector read it)
    # Bundle id (iOS) or package name (Android); None when the MDM gives none (Intune).
    app_id: str | None = None
    display_name: str | None = None
    publisher: str | None = None
    version: str | None = None

    @property
    def identity(self) -> str:
        what = self.app_id or f"name:{(self.display_name or '').lower()}"
        return f"mdm:{self.connector}:{self.device_id}:{what}"


Observation = (ProcessObservation | InstalledObservation | ConnectionObservation
               | MobileAppObservation)
