"""What a connector reads from an MDM, vendor-neutral: devices, and apps on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from policies.vocabulary import MobileOsName


class SyncError(Exception):
    """The sync cannot complete: nothing is changed, and the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class MobileApp:
    # Bundle id (iOS) or package name (Android); None where the MDM gives none (Intune).
    app_id: str | None
    display_name: str | None = None
    publisher: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class MobileDevice:
    id: str
    name: str
    os: MobileOsName
    os_version: str = ""
    user: str = ""
    model: str = ""
    serial: str = ""
    # False when the MDM gave no app list for it (Android without application reports):
    # its findings are then left as they are, neither opened nor resolved.
    apps_known: bool = True


@dataclass(frozen=True, slots=True)
class MobileInstall:
    """`app` is on the device with id `device_id` (yielded after that device)."""

    device_id: str
    platform: MobileOsName
    app: MobileApp


InventoryItem = MobileDevice | MobileInstall
# Whether an app can matter to the policy: a connector may skip fetching more about the
# others (Intune's devices-per-app). Never used to decide a finding.
Wanted = Callable[[MobileApp, MobileOsName], bool]


@dataclass
class ReadStats:
    """What the connector saw; `notes` are warnings a sync reports with its result."""

    devices: int = 0
    apps: int = 0
    pages: int = 0
    notes: list[str] = field(default_factory=list)


class Connector(Protocol):
    stats: ReadStats

    def inventory(self, wanted: Wanted) -> Iterator[InventoryItem]:
        """Devices and their apps, streamed; raises SyncError when it cannot read them all."""
        ...


def text(value: Any) -> str:
    """A vendor string field, or "" for a missing or non-string one."""
    return value if isinstance(value, str) else ""


def opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
