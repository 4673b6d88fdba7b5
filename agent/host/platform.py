"""Facts about the machine the agent runs on, decided once."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from policies.engine import HostContext
from policies.vocabulary import OsName


def current_os(platform: str | None = None) -> OsName:
    """The policy language's name for this OS (`sys.platform` by default)."""
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        return "linux"
    if platform == "darwin":
        return "macos"
    if platform in ("win32", "cygwin"):
        return "windows"
    raise ValueError(f"unsupported platform {platform!r}: Warden runs on Linux, macOS and Windows")


def hostname() -> str:
    return socket.gethostname()


def is_privileged() -> bool:
    """Whether the agent can see every user's processes and files (root / Administrator)."""
    if sys.platform == "win32":
        import ctypes

        # IsUserAnAdmin is deprecated but still the one call that needs no token plumbing.
        return bool(ctypes.windll.shell32.IsUserAnAdmin())
    return os.geteuid() == 0


def host_context(
    os_name: OsName | None = None,
    groups: frozenset[str] = frozenset(),
    tags: frozenset[str] = frozenset(),
) -> HostContext:
    """The engine's view of this host. Groups and tags come from the server once enrolled."""
    os_name = os_name or current_os()
    return HostContext(
        os=os_name, hostname=hostname(), groups=groups, tags=tags, homes=user_homes(os_name)
    )


def user_homes(os_name: OsName) -> tuple[str, ...]:
    """Every readable home on this machine; on Linux /etc/passwd may put them anywhere."""
    if os_name != "linux":
        return ()  # /Users and C:/Users: where `~` already looks
    from agent.sensors.homes import MachineRoot, find_homes

    homes, _ = find_homes(MachineRoot(Path("/"), os_name))
    return tuple(home.logical for home in homes)
