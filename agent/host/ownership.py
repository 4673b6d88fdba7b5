"""Trust only files an administrator controls: who owns a path, and who else may change it.

The agent's config file says what program it runs (`notify_command`), which
server and CA it trusts, which key policies must be signed with; its state
directory holds its token and its policy. A file like that, or a directory on
the way to it, that an ordinary user owns or may write lets that user make the
agent (root, SYSTEM) run their program. So, as sshd's StrictModes does, every
entry the OS passes through to reach such a path -- the root, each directory,
each symbolic link and what it points to -- must be owned by root /
SYSTEM / Administrators / TrustedInstaller, or by the user the agent itself
runs as (an ordinary user's `warden-agent scan`), and writable by nobody else.
A directory it only passes through may let others add entries when they cannot
remove or rename anyone else's (a sticky /tmp, C:\\ProgramData): what was
checked stays put.

POSIX: owner uid and group/other write bits (a POSIX ACL granting write shows
as a group write bit). Windows: owner SID and DACL (agent/host/ownership_windows.py).
"""

from __future__ import annotations

import functools
import os
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # The Windows half is imported where it runs: its ctypes plumbing is memory every
    # Linux and macOS agent would otherwise carry.
    from agent.host.ownership_windows import Role

# Symbolic links followed before the path counts as a loop (Linux's own limit).
_MAX_LINKS = 40
# Why it matters, said once in every refusal.
_WHY = ("whoever can change it could make the agent run their program or trust their "
        "server, so the agent trusts only what an administrator controls")


class UntrustedPath(ValueError):
    """A file the agent would trust that someone else could change; the message says
    which, its owner and mode (or access list), and the command that fixes it."""


class Inspector(Protocol):
    """How one OS says whether an entry is trusted, and how to fix one that is not."""

    def problem(self, path: Path, lstat: os.stat_result, role: Role) -> str | None: ...

    def fix(self, path: Path, role: Role) -> str: ...


@dataclass(frozen=True)
class PosixInspector:
    """Owner uid in `trusted_uids`; no group or other write bit (but a sticky directory)."""

    trusted_uids: frozenset[int]

    def problem(self, path: Path, lstat: os.stat_result, role: Role) -> str | None:
        mode = stat.S_IMODE(lstat.st_mode)
        owner = f"{_user(lstat.st_uid)} (uid {lstat.st_uid})"
        if lstat.st_uid not in self.trusted_uids:
            runner = " or ".join([_user(0), *(f"{_user(uid)} (the user the agent runs as)"
                                              for uid in sorted(self.trusted_uids) if uid)])
            return f"is owned by {owner}, mode {mode:04o}, not by {runner}"
        if role == "link":  # a link's mode means nothing; only its owner may replace it
            return None
        writers = [who for who, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit]
        if not writers or (role == "parent" and mode & stat.S_ISVTX):
            return None
        change = {"file": "change it", "directory": "add or replace files in it",
                  "parent": "rename or replace what is in it"}[role]
        return f"has mode {mode:04o} (owner {owner}): {' and '.join(writers)} may {change}"

    def fix(self, path: Path, role: Role) -> str:
        quoted = shlex.quote(str(path))
        if role == "link":
            return f"chown -h root:root {quoted} (or replace the link)"
        chmod = {"file": "chmod 600", "directory": "chmod 700", "parent": "chmod go-w"}[role]
        return f"chown root:root {quoted} && {chmod} {quoted}"


class _SddlReader(Protocol):
    def __call__(self, path: str) -> str: ...


@dataclass(frozen=True)
class WindowsInspector:
    """Owner SID and DACL, read as SDDL through `read_sddl` and judged by `judge_sddl`."""

    read_sddl: _SddlReader
    trusted_sids: frozenset[str]

    def problem(self, path: Path, lstat: os.stat_result, role: Role) -> str | None:
        from agent.host.ownership_windows import judge_sddl

        sddl = self.read_sddl(str(path))
        try:
            return judge_sddl(sddl, role, self.trusted_sids)
        except ValueError as exc:  # what cannot be read cannot be shown to be safe
            return f"has a security descriptor the agent cannot read: {exc}"

    def fix(self, path: Path, role: Role) -> str:
        grant = "(OI)(CI)F" if role in ("directory", "parent") else "F"
        quoted = f'"{path}"'
        return (f"icacls {quoted} /setowner *S-1-5-32-544 && icacls {quoted} /inheritance:r "
                f"/grant:r *S-1-5-18:{grant} *S-1-5-32-544:{grant}")


def this_machine() -> Inspector:
    """The inspector for this OS and the user this process runs as now."""
    if sys.platform == "win32":
        return _windows_inspector()
    return PosixInspector(frozenset({0, os.geteuid()}))


@functools.cache
def _windows_inspector() -> WindowsInspector:
    from agent.host.ownership_windows import ADMIN_SIDS, WindowsSecurity

    security = WindowsSecurity.load()
    return WindowsInspector(security.sddl, ADMIN_SIDS | {security.user_sid()})


def require_trusted(path: Path, what: str, role: Role,
                    inspector: Inspector | None = None) -> os.stat_result | None:
    """Refuse `path` (UntrustedPath) unless every entry on the way to it is trusted, and it
    too; its stat, or None when it does not exist (what exists on the way is checked)."""
    inspector = inspector or this_machine()
    steps, reached = _walk(path)
    for index, (entry, lstat) in enumerate(steps):
        last = reached and index == len(steps) - 1
        step_role: Role = role if last else "link" if _is_link(lstat) else "parent"
        problem = inspector.problem(entry, lstat, step_role)
        if problem is not None:
            subject = "it" if last else (
                f"the {'link' if step_role == 'link' else 'directory'} {entry} on its path")
            raise UntrustedPath(f"refusing {what} {path}: {subject} {problem}; {_WHY}. "
                                f"Fix: {inspector.fix(entry, step_role)}")
    return steps[-1][1] if reached else None


def read_trusted(path: Path, what: str, inspector: Inspector | None = None) -> bytes | None:
    """The content of `path` once checked, or None when it does not exist.

    The file read is the one checked: same device and inode, else refused.
    """
    checked = require_trusted(path, what, "file", inspector)
    if checked is None:
        return None
    with open(path, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
            raise UntrustedPath(f"refusing {what} {path}: it was replaced while being checked")
        return handle.read()


def require_trusted_tree(path: Path, what: str, inspector: Inspector | None = None) -> None:
    """`path` (a directory, when it exists) and everything inside it, each trusted."""
    inspector = inspector or this_machine()
    if require_trusted(path, what, "directory", inspector) is None:
        return
    for folder, directories, files in os.walk(path):
        for name in sorted(directories):
            require_trusted(Path(folder) / name, f"{what}'s folder", "directory", inspector)
        for name in sorted(files):
            require_trusted(Path(folder) / name, f"{what}'s file", "file", inspector)


def _walk(path: Path) -> tuple[list[tuple[Path, os.stat_result]], bool]:
    """Every entry the OS goes through to reach `path`, in order, with its lstat: the root,
    each directory, each symbolic link and, in its place, where it points. The second
    value says whether `path` exists; when not, the walk stops at the first missing part."""
    absolute = path if path.is_absolute() else Path.cwd() / path
    current = Path(absolute.anchor)
    steps = [(current, os.lstat(current))]
    pending = list(absolute.parts[1:])
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent  # the physical parent: links are already followed
            continue
        entry = current / part
        try:
            lstat = os.lstat(entry)
        except (FileNotFoundError, NotADirectoryError):
            return steps, False
        steps.append((entry, lstat))
        if not _is_link(lstat):
            current = entry
            continue
        links += 1
        if links > _MAX_LINKS:
            raise UntrustedPath(f"refusing {path}: more than {_MAX_LINKS} symbolic links "
                                "on its path (a loop?)")
        target = Path(os.readlink(entry))
        if target.is_absolute():
            current = Path(target.anchor)
            steps.append((current, os.lstat(current)))
            pending = [*target.parts[1:], *pending]
        else:
            pending = [*target.parts, *pending]
    return steps, True


def _is_link(lstat: os.stat_result) -> bool:
    # A Windows junction is a link to follow too, though S_ISLNK does not say so.
    junction = getattr(lstat, "st_reparse_tag", 0) == 0xA0000003
    return stat.S_ISLNK(lstat.st_mode) or junction


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"
