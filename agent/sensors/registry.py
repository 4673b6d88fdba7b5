"""The Windows registry, behind the two calls the installed-apps sensor needs.

The Windows backend never touches winreg: it asks a RegistryReader. On Windows
that is WinRegistry (winreg is imported only there); in tests, and to look at
a machine recorded elsewhere, it is RecordedRegistry over a JSON file. Keeping
the winreg side this thin is what lets the parsing be tested on any OS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

RegistryValue = str | int | bytes | list[str] | None

_HIVE_ALIASES = {
    "HKEY_LOCAL_MACHINE": "HKLM",
    "HKEY_USERS": "HKU",
    "HKEY_CURRENT_USER": "HKCU",
}


class RegistryReader(Protocol):
    """Read-only access to registry keys. A missing key reads as empty.

    A key the caller may not read raises PermissionError, so the sensor can
    say which part of the machine it could not see.
    """

    def subkeys(self, hive: str, path: str) -> list[str]: ...

    def values(self, hive: str, path: str) -> dict[str, RegistryValue]: ...


def _hive_name(hive: str) -> str:
    name = hive.upper()
    return _HIVE_ALIASES.get(name, name)


def _join(hive: str, path: str) -> str:
    path = path.strip("\\")
    return f"{_hive_name(hive)}\\{path}" if path else _hive_name(hive)


class RecordedRegistry:
    """Registry keys recorded as JSON (what `reg export` shows, in JSON form).

    Format: ``{"keys": {"HKLM\\\\SOFTWARE\\\\...\\\\Key": {"Value": "data", ...}},
    "denied": ["HKU\\\\S-1-5-..."]}``. Parent keys are implied by their children.
    Keys in `denied` (and everything below them) raise PermissionError, as they
    did on the machine that was recorded. Names are case-insensitive, as on Windows.
    """

    def __init__(self, keys: dict[str, dict[str, RegistryValue]],
                 denied: list[str] | None = None) -> None:
        self._values: dict[str, dict[str, RegistryValue]] = {}
        self._children: dict[str, dict[str, str]] = {}
        for full, values in keys.items():
            hive, path = _split(full)
            parts = [_hive_name(hive), *(part for part in path.split("\\") if part)]
            self._values[_fold(parts)] = dict(values)
            for depth in range(1, len(parts)):
                children = self._children.setdefault(_fold(parts[:depth]), {})
                children.setdefault(parts[depth].casefold(), parts[depth])
        self._denied = [_join(*_split(entry)).casefold() for entry in denied or []]

    @classmethod
    def from_json(cls, path: Path) -> RecordedRegistry:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return cls(data.get("keys", {}), data.get("denied", []))

    def subkeys(self, hive: str, path: str) -> list[str]:
        key = self._check(hive, path)
        return sorted(self._children.get(key, {}).values(), key=str.casefold)

    def values(self, hive: str, path: str) -> dict[str, RegistryValue]:
        return dict(self._values.get(self._check(hive, path), {}))

    def _check(self, hive: str, path: str) -> str:
        key = _join(hive, path).casefold()
        for denied in self._denied:
            if key == denied or key.startswith(denied + "\\"):
                raise PermissionError(13, "Access is denied", _join(hive, path))
        return key


def _split(full: str) -> tuple[str, str]:
    hive, _, path = full.partition("\\")
    return hive, path


def _fold(parts: list[str]) -> str:
    return "\\".join(parts).casefold()


class WinRegistry:
    """The live registry of the Windows machine the agent runs on."""

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("the Windows registry can only be read on Windows")

    def subkeys(self, hive: str, path: str) -> list[str]:
        if sys.platform == "win32":
            import winreg

            try:
                root = getattr(winreg, _WIN_HIVES[_hive_name(hive)])
                with winreg.OpenKey(root, path, 0, winreg.KEY_READ | winreg.KEY_WOW64_64KEY) as key:
                    count = winreg.QueryInfoKey(key)[0]
                    return [winreg.EnumKey(key, index) for index in range(count)]
            except FileNotFoundError:
                return []
        raise OSError("the Windows registry can only be read on Windows")

    def values(self, hive: str, path: str) -> dict[str, RegistryValue]:
        if sys.platform == "win32":
            import winreg

            try:
                root = getattr(winreg, _WIN_HIVES[_hive_name(hive)])
                with winreg.OpenKey(root, path, 0, winreg.KEY_READ | winreg.KEY_WOW64_64KEY) as key:
                    count = winreg.QueryInfoKey(key)[1]
                    found: dict[str, RegistryValue] = {}
                    for index in range(count):
                        name, data, _kind = winreg.EnumValue(key, index)
                        found[name] = data
                    return found
            except FileNotFoundError:
                return {}
        raise OSError("the Windows registry can only be read on Windows")


# KEY_WOW64_64KEY above: the 64-bit view, so WOW6432Node is read by its own name and
# a 32-bit Python does not silently see the 32-bit keys twice.
_WIN_HIVES = {"HKLM": "HKEY_LOCAL_MACHINE", "HKU": "HKEY_USERS", "HKCU": "HKEY_CURRENT_USER"}
