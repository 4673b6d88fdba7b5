"""Where users live on a machine that is read under a root directory.

The agent reads the machine it runs on (root "/") or a mounted image or test
tree (root "/mnt/image"). Either way it reports paths as they are on that
machine ("/home/alice/...", "C:/Users/bob/..."), because catalog globs such
as `~/.local/share/TelegramDesktop` are written against those.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.sensors import safe_read
from policies.vocabulary import OsName

# Profile folders under C:/Users that belong to nobody (or are links to others).
_WINDOWS_NOT_USERS = {"public", "default", "default user", "all users", "defaultapppool"}
# /Users/Shared is a drop box for every account, not one person's home.
_MACOS_NOT_USERS = {"Shared"}
# Accounts below this uid are system services on Linux; nobody (65534) too.
_FIRST_HUMAN_UID = 1000
_NOBODY_UID = 65534
_MAX_HOMES = 100_000
_PASSWD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class UserHome:
    user: str
    path: Path  # where it is readable now (under the root)
    logical: str  # where it is on that machine: "/home/alice", "C:/Users/bob"


class MachineRoot:
    """Translates between paths on the machine and paths readable under `root`."""

    def __init__(self, root: Path, os_name: OsName) -> None:
        self.root = root
        self.os_name = os_name
        # Windows paths are reported with a drive; a mounted image is drive C: unless
        # the root itself is a drive ("D:\").
        self.drive = (root.drive or os.environ.get("SYSTEMDRIVE", "C:")).upper() if (
            os_name == "windows") else ""

    def real(self, logical: str) -> Path:
        """`/home/alice` -> `<root>/home/alice`; `C:/Users/bob` -> `<root>/Users/bob`."""
        text = logical.replace("\\", "/")
        if len(text) > 1 and text[1] == ":":
            text = text[2:]
        return self.root.joinpath(*PurePosixPath(text.lstrip("/")).parts)

    def logical(self, real: Path) -> str:
        """The inverse of `real`: forward slashes, with the drive on Windows."""
        relative = real.relative_to(self.root).as_posix()
        relative = "" if relative == "." else relative
        return f"{self.drive}/{relative}" if self.os_name == "windows" else f"/{relative}"

    def privilege_hint(self) -> str:
        if self.os_name == "windows":
            return "run the agent as Administrator or SYSTEM to see every user's installs"
        return "run as root to see every user's installs"

    def unreadable(self, real: Path, error: OSError) -> str:
        """A plain sentence for a path that could not be read."""
        where = self.logical(real) if real.is_relative_to(self.root) else str(real)
        if isinstance(error, PermissionError):
            return f"could not read {where}: permission denied; {self.privilege_hint()}"
        return f"could not read {where}: {error.strerror or error}"


def find_homes(machine: MachineRoot) -> tuple[list[UserHome], list[str]]:
    """Every user's home that can be read, and a warning for each that cannot.

    Homes come from the usual parent folders and, on Linux, from /etc/passwd,
    so a home outside /home (a service account, /srv/alice) is not missed.
    """
    candidates: list[tuple[str, Path]] = []
    warnings: list[str] = []
    if machine.os_name == "linux":
        candidates += _passwd_homes(machine)
        for parent in ("home", "var/home"):
            candidates += _children(machine, machine.root / parent, set(), warnings)
        candidates.append(("root", machine.root / "root"))
    elif machine.os_name == "macos":
        candidates += _children(machine, machine.root / "Users", _MACOS_NOT_USERS, warnings)
    else:
        candidates += [(name, path) for name, path in _children(
            machine, machine.root / "Users", set(), warnings)
            if name.lower() not in _WINDOWS_NOT_USERS]

    homes: list[UserHome] = []
    seen: set[tuple[int, int]] = set()
    for user, path in candidates:
        try:
            info = path.stat()
        except OSError:
            continue  # listed in passwd but absent: nothing to read there
        # /home may be a link to /var/home (Fedora Silverblue): one home, seen twice.
        if not stat.S_ISDIR(info.st_mode) or (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            # Homes are named by root-owned places (/home, /etc/passwd): a home that
            # is a link (to a bigger disk) is followed, and is the anchor of its reads.
            safe_read.list_dir(Path(os.path.realpath(path)), 1)
        except OSError as error:
            warnings.append(machine.unreadable(path, error))
            continue
        homes.append(UserHome(user, path, machine.logical(path)))
    return homes, warnings


def home_parents(machine: MachineRoot) -> list[Path]:
    """The folders in which a new user's home appears."""
    if machine.os_name == "linux":
        return [machine.root / "home", machine.root / "var/home"]
    return [machine.root / "Users"]


def _children(
    machine: MachineRoot, parent: Path, skip: set[str], warnings: list[str]
) -> list[tuple[str, Path]]:
    try:
        entries = safe_read.list_dir(parent, _MAX_HOMES, beneath=machine.root)
    except FileNotFoundError:
        return []
    except OSError as error:
        warnings.append(machine.unreadable(parent, error))
        return []
    # A home may be a link (to a bigger disk); find_homes checks where each one leads.
    return [(entry.name, Path(entry.path)) for entry in entries
            if not entry.name.startswith(".") and entry.name not in skip
            and entry.name != "lost+found" and entry.kind in ("dir", "link")]


def _passwd_homes(machine: MachineRoot) -> list[tuple[str, Path]]:
    try:
        data = safe_read.read_file(machine.root / "etc/passwd", _PASSWD_BYTES,
                                   beneath=machine.root)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    homes = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit():
            continue
        name, uid, home = fields[0], int(fields[2]), fields[5]
        human = uid == 0 or (uid >= _FIRST_HUMAN_UID and uid != _NOBODY_UID)
        if human and home.startswith("/") and home.strip("/"):
            homes.append((name, machine.real(home)))
    return homes
