"""Installed apps on Windows: uninstall entries and Store (MSIX) packages.

Everything comes through a RegistryReader (registry.py): the live registry on
Windows, recorded data elsewhere. Per-user installs (Telegram Desktop's Inno
Setup installer writes to HKCU) are read from each user's hive under
HKEY_USERS; a user who is not logged on has no hive loaded there, and the
sensor says so rather than pretend the user has nothing installed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.sensors.homes import MachineRoot
from agent.sensors.registry import RegistryReader, RegistryValue, WinRegistry
from agent.sensors.scan_context import ScanContext, SearchRoot, WatchDir
from policies.observations import InstalledObservation

UNINSTALL_KEYS = (
    r"Software\Microsoft\Windows\CurrentVersion\Uninstall",
    r"Software\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
)
PROFILE_LIST = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList"
# Under a user's classes hive (HKU\<SID>_Classes, seen as HKCU\Software\Classes).
MSIX_PACKAGES = (r"Local Settings\Software\Microsoft\Windows\CurrentVersion"
                 r"\AppModel\Repository\Packages")
# Packages provisioned for every new user of the machine.
MSIX_PROVISIONED = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Appx\AppxAllUserStore\Applications"
# Domain and local accounts; S-1-5-18/19/20 are the service accounts.
_PEOPLE_SID_PREFIX = "S-1-5-21-"

T = TypeVar("T", list[str], dict[str, RegistryValue])


def package_family(full_name: str) -> tuple[str, str] | None:
    """`Name_Version_Arch_ResourceId_PublisherId` -> (`Name_PublisherId`, version)."""
    parts = full_name.split("_")
    if len(parts) != 5 or not parts[0] or not parts[4]:
        return None
    name, version, _arch, _resource, publisher_id = parts
    return f"{name}_{publisher_id}", version


def _live_registry(machine: MachineRoot) -> RegistryReader | None:
    # The live registry describes this machine only, not a disk image mounted elsewhere.
    if sys.platform != "win32" or machine.root != Path(machine.root.anchor):
        return None
    return WinRegistry()


class WindowsBackend:
    def __init__(self, machine: MachineRoot, registry: RegistryReader | None = None) -> None:
        self._registry = registry if registry is not None else _live_registry(machine)

    def scan(self, ctx: ScanContext) -> list[InstalledObservation]:
        if self._registry is None:
            ctx.warn("the Windows registry of this machine cannot be read here, so uninstall "
                     "entries and Store (MSIX) packages were not checked")
            return []
        reader = _Reader(self._registry, ctx)
        users = _profile_users(reader)
        found = [obs for key in UNINSTALL_KEYS for obs in _uninstall(reader, "HKLM", key, None)]
        loaded = [sid for sid in reader.subkeys("HKU", "")
                  if not sid.lower().endswith("_classes") and sid != ".DEFAULT"]
        for sid in loaded:
            user = users.get(sid.upper(), sid)
            if not reader.hive_readable(sid, user):
                continue
            for key in UNINSTALL_KEYS:
                found += _uninstall(reader, "HKU", f"{sid}\\{key}", user)
            # The classes hive is also linked under Software\Classes; read whichever answers.
            packages = (_msix(reader, f"{sid}_Classes\\{MSIX_PACKAGES}", user)
                        or _msix(reader, f"{sid}\\Software\\Classes\\{MSIX_PACKAGES}", user))
            found += packages
        found += _msix(reader, MSIX_PROVISIONED, None, provisioned=True)
        loaded_upper = {sid.upper() for sid in loaded}
        absent = sorted(user for sid, user in users.items()
                        if sid.startswith(_PEOPLE_SID_PREFIX) and sid not in loaded_upper)
        if absent:
            ctx.warn(f"the registry of {', '.join(absent)} is not loaded (not logged on), so "
                     "their per-user installs and Store apps were not read; their folders "
                     "were still searched")
        return found

    def search_roots(self, ctx: ScanContext) -> list[SearchRoot]:
        roots = []
        for home in ctx.homes:
            roots += [SearchRoot(home.path / "Downloads", 3, home.user, watch_recursively=True),
                      SearchRoot(home.path / "Desktop", 3, home.user, watch_recursively=True),
                      SearchRoot(home.path, 3, home.user)]
        # C:\Telegram, C:\Tools\Telegram, C:\Program Files\Telegram Desktop ...
        return [*roots, SearchRoot(ctx.machine.root, 2, None)]

    def watch_dirs(self, ctx: ScanContext) -> list[WatchDir]:
        per_user = [home.path / "AppData" / sub for home in ctx.homes
                    for sub in ("Roaming", "Local/Programs", "Local/Packages")]
        machine = [ctx.machine.root / "Program Files", ctx.machine.root / "Program Files (x86)"]
        return [WatchDir(path) for path in (*per_user, *machine)]


class _Reader:
    """The registry, with unreadable keys turned into warnings."""

    def __init__(self, registry: RegistryReader, ctx: ScanContext) -> None:
        self._registry = registry
        self._ctx = ctx

    def warn(self, text: str) -> None:
        self._ctx.warn(text)

    def hive_readable(self, sid: str, user: str) -> bool:
        """Whether a user's hive can be read; one warning for the user when not."""
        try:
            self._registry.subkeys("HKU", f"{sid}\\Software")
        except PermissionError:
            self.warn(f"could not read the registry of {user} (HKU\\{sid}): access denied; "
                      f"{self._ctx.machine.privilege_hint()}")
            return False
        except OSError as error:
            self.warn(f"could not read the registry of {user} (HKU\\{sid}): {error}")
            return False
        return True

    def subkeys(self, hive: str, path: str) -> list[str]:
        return self._read(self._registry.subkeys, hive, path, [])

    def values(self, hive: str, path: str) -> dict[str, RegistryValue]:
        return self._read(self._registry.values, hive, path, {})

    def _read(self, call: Callable[[str, str], T], hive: str, path: str, empty: T) -> T:
        try:
            return call(hive, path)
        except PermissionError:
            self._ctx.warn(f"could not read registry key {hive}\\{path}: access denied; "
                           f"{self._ctx.machine.privilege_hint()}")
        except OSError as error:
            self._ctx.warn(f"could not read registry key {hive}\\{path}: {error}")
        return empty


def _text(values: dict[str, RegistryValue], name: str) -> str | None:
    value = values.get(name)
    return value.strip() or None if isinstance(value, str) else None


def _win_path(value: str | None) -> str | None:
    """`"C:\\Users\\bob\\AppData\\Roaming\\Telegram Desktop\\"` -> `C:/Users/bob/...Desktop`."""
    if not value:
        return None
    path = value.strip().strip('"').replace("\\", "/").rstrip("/")
    return path or None


def _profile_users(reader: _Reader) -> dict[str, str]:
    """SID -> user name, from each profile's folder (C:\\Users\\bob -> bob)."""
    users = {}
    for sid in reader.subkeys("HKLM", PROFILE_LIST):
        folder = _win_path(_text(reader.values("HKLM", f"{PROFILE_LIST}\\{sid}"),
                                 "ProfileImagePath"))
        if folder:
            users[sid.upper()] = folder.rpartition("/")[2]
    return users


def _uninstall(reader: _Reader, hive: str, path: str, user: str | None
               ) -> list[InstalledObservation]:
    found = []
    for key in reader.subkeys(hive, path):
        values = reader.values(hive, f"{path}\\{key}")
        found.append(InstalledObservation(
            source="windows_uninstall", id=key, user=user,
            path=_win_path(_text(values, "InstallLocation")),
            version=_text(values, "DisplayVersion"),
            display_name=_text(values, "DisplayName"),
            publisher=_text(values, "Publisher")))
    return found


def _msix(reader: _Reader, path: str, user: str | None, provisioned: bool = False
          ) -> list[InstalledObservation]:
    hive = "HKLM" if provisioned else "HKU"
    found = []
    for full_name in reader.subkeys(hive, path):
        family = package_family(full_name)
        if family is None:
            reader.warn(f"could not make sense of the Store package name {full_name!r}")
            continue
        values = reader.values(hive, f"{path}\\{full_name}")
        if provisioned:
            # Path names the package's manifest: ...\WindowsApps\<full name>\AppxManifest.xml
            manifest = _win_path(_text(values, "Path"))
            root = manifest.rpartition("/")[0] if manifest else None
        else:
            root = _win_path(_text(values, "PackageRootFolder"))
        name = _text(values, "DisplayName")
        # Store apps often name a resource ("@{...}", "ms-resource:") instead of a name.
        if name and name.startswith(("@{", "ms-resource:")):
            name = None
        found.append(InstalledObservation(source="msix", id=family[0], version=family[1],
                                          path=root, user=user, display_name=name))
    return found
