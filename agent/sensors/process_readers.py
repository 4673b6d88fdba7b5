"""How processes are read: the interface, and the portable psutil reader.

The sensor talks to one `ProcessReader`, chosen once per platform: the /proc
reader on Linux (agent.sensors.procfs), psutil everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast

import psutil


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process as a reader saw it."""

    pid: int
    name: str
    create_time: float
    exe: str | None = None
    cmdline: tuple[str, ...] = ()
    username: str | None = None
    ppid: int | None = None
    # Something could not be read (usually another user's process, as non-root).
    denied: bool = False
    # Exited but not yet reaped by its parent: not running any more.
    zombie: bool = False


class ProcessReader(Protocol):
    """Reads processes from the OS; one implementation per platform, chosen once."""

    def pids(self) -> list[int]: ...

    def read(self, pid: int) -> ProcessInfo | None:
        """The process, or None when it is gone."""
        ...

    def read_all(self) -> Iterator[ProcessInfo]: ...

    def start_time(self, pid: int) -> tuple[float, bool] | None:
        """(create_time, zombie) of a pid, cheaply; None when it is gone."""
        ...

    def generation(self) -> int | None:
        """A number that changes whenever a process is created; None if unknown."""
        ...

    def created_between(self, first: int, last: int) -> list[int] | None:
        """Processes created between two generations, if cheap to tell; else None."""
        ...


def full_name(name: str, exe: str | None, cmdline: Iterable[str]) -> str:
    """The real process name when the kernel cut it to 15 characters (Linux comm)."""
    if len(name) < 15:
        return name
    candidates = [*cmdline][:1] + ([exe] if exe else [])
    for candidate in candidates:
        base = os.path.basename(candidate)
        if base.startswith(name) and len(base) > len(name):
            return base
    return name


class PsutilReader:
    """The portable reader (macOS, Windows; also works on Linux)."""

    ATTRS = ["pid", "name", "exe", "cmdline", "username", "create_time", "ppid", "status"]

    def pids(self) -> list[int]:
        pids: list[int] = psutil.pids()
        return pids

    def read(self, pid: int) -> ProcessInfo | None:
        try:
            process = psutil.Process(pid)
            info = process.as_dict(attrs=self.ATTRS, ad_value=None)
        except psutil.NoSuchProcess:
            return None
        return self._info(info)

    def read_all(self) -> Iterator[ProcessInfo]:
        for process in psutil.process_iter(attrs=self.ATTRS, ad_value=None):
            yield self._info(process.info)

    def start_time(self, pid: int) -> tuple[float, bool] | None:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                return process.create_time(), process.status() == psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            # AccessDenied here means the pid now belongs to someone else: not ours.
            return None

    def generation(self) -> int | None:
        return None

    def created_between(self, first: int, last: int) -> list[int] | None:
        return None

    @staticmethod
    def _info(info: dict[str, object]) -> ProcessInfo:
        name = info["name"] if isinstance(info["name"], str) else ""
        exe = info["exe"] if isinstance(info["exe"], str) and info["exe"] else None
        raw_cmdline = info["cmdline"]
        cmdline = tuple(raw_cmdline) if isinstance(raw_cmdline, list) else ()
        zombie = info["status"] == psutil.STATUS_ZOMBIE
        create_time = info["create_time"]
        ppid = info["ppid"]
        username = info["username"]
        return ProcessInfo(
            pid=cast(int, info["pid"]),
            name=full_name(name, exe, cmdline),
            create_time=create_time if isinstance(create_time, float) else 0.0,
            exe=exe,
            cmdline=cmdline,
            username=username if isinstance(username, str) else None,
            ppid=ppid if isinstance(ppid, int) else None,
            # With ad_value=None a denied exe comes back as None; kernel threads give "".
            denied=info["exe"] is None and not zombie,
            zombie=zombie,
        )
