"""Linux: processes read straight from /proc.

psutil builds a Process object and parses several files per process; reading
the three files we need directly makes a full pass cheaper than `ps` itself
(see bench/agent_footprint.py), and a tick is a single directory listing.
Values match psutil's (create_time = boot time + start ticks), so identities
agree whichever reader produced them.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import psutil

from agent.sensors.process_readers import ProcessInfo, full_name

_DELETED = " (deleted)"
# Newcomers are probed pid by pid up to this many pids; beyond, /proc is listed.
MAX_PROBE = 256


class ProcfsReader:
    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = str(proc)
        self._boot_time = psutil.boot_time()
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._users: dict[int, str] = {}

    def generation(self) -> int | None:
        """The last pid the kernel handed out (the last field of /proc/loadavg).

        It moves whenever a process (or thread) is created, so an unchanged
        value lets a tick skip listing /proc: one small read instead of a
        directory of every process.
        """
        try:
            with open(f"{self._proc}/loadavg", "rb") as handle:
                return int(handle.read().rsplit(None, 1)[-1])
        except (OSError, ValueError, IndexError):
            return None

    def created_between(self, first: int, last: int) -> list[int] | None:
        """Processes among the pids handed out after `first`, up to `last`.

        The kernel hands out pids in increasing order (until it wraps), so the
        newcomers lie in that range; threads take pids too and are skipped. A
        wide range (a burst of threads) or a wrap is cheaper to answer with a
        listing: None.
        """
        if last == first:
            return []
        if not 0 < last - first <= MAX_PROBE:
            return None
        return [pid for pid in range(first + 1, last + 1) if self._is_process(pid)]

    def _is_process(self, pid: int) -> bool:
        try:
            with open(f"{self._proc}/{pid}/status", "rb") as handle:
                status = handle.read(1024)
        except PermissionError:
            return True  # let read() say what it can
        except OSError:
            return False  # gone already, or never a process
        start = status.find(b"\nTgid:")
        end = status.find(b"\n", start + 1)
        return start >= 0 and status[start + 6:end].strip() == str(pid).encode()

    def pids(self) -> list[int]:
        return [int(name) for name in os.listdir(self._proc) if name.isdigit()]

    def read_all(self) -> Iterator[ProcessInfo]:
        for pid in self.pids():
            info = self.read(pid)
            if info is not None:
                yield info

    def start_time(self, pid: int) -> tuple[float, bool] | None:
        stat = self._stat(pid)
        if stat is None:
            return None
        _, state, _, create_time = stat
        return create_time, state == "Z"

    def read(self, pid: int) -> ProcessInfo | None:
        base = f"{self._proc}/{pid}"
        stat = self._stat(pid)
        if stat is None:
            return None
        comm, state, ppid, create_time = stat
        if state == "Z":
            return ProcessInfo(pid=pid, name=comm, create_time=create_time, ppid=ppid,
                               zombie=True)
        denied = False
        try:
            # The owner of /proc/<pid> is the process's user (root if it made itself
            # non-dumpable); one stat() is far cheaper than parsing /proc/<pid>/status.
            uid = os.stat(base).st_uid
            with open(f"{base}/cmdline", "rb") as handle:
                cmdline = _split_cmdline(handle.read().decode("utf-8", "replace"))
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError:
            # hidepid=1: the directory is listed but its contents are not ours to read.
            return ProcessInfo(pid=pid, name=comm, create_time=create_time, ppid=ppid,
                               denied=True)
        try:
            exe: str | None = os.readlink(f"{base}/exe")
        except PermissionError:
            exe, denied = None, True
        except OSError:
            # Kernel threads have no exe; a process may also have just exited.
            exe = None
        exe = _strip_deleted(exe) if exe else None
        return ProcessInfo(
            pid=pid,
            name=full_name(comm, exe, cmdline),
            create_time=create_time,
            exe=exe or None,
            cmdline=cmdline,
            username=self._user(uid),
            ppid=ppid,
            denied=denied,
        )

    def _stat(self, pid: int) -> tuple[str, str, int, float] | None:
        """(comm, state, ppid, create_time) from /proc/<pid>/stat, or None when gone."""
        try:
            with open(f"{self._proc}/{pid}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        # comm may itself contain spaces and parentheses: it ends at the last ')'.
        left, right = data.find(b"("), data.rfind(b")")
        fields = data[right + 2:].split()
        if left < 0 or right < 0 or len(fields) < 20:
            return None
        comm = data[left + 1:right].decode("utf-8", "replace")
        create_time = int(fields[19]) / self._ticks + self._boot_time
        return comm, fields[0].decode(), int(fields[1]), create_time

    def _user(self, uid: int) -> str:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = str(uid)
        return self._users[uid]


def _strip_deleted(exe: str) -> str:
    # An exe replaced or removed while running reads as "<path> (deleted)".
    if exe.endswith(_DELETED) and not os.path.exists(exe):
        return exe[: -len(_DELETED)]
    return exe


def _split_cmdline(data: str) -> tuple[str, ...]:
    # Arguments end with NUL; programs that rewrite their title (setproctitle,
    # Chrome) often use spaces instead. Same rules as psutil.
    if not data:
        return ()
    sep = "\x00" if data.endswith("\x00") else " "
    if data.endswith(sep):
        data = data[:-1]
    parts = data.split(sep)
    if sep == "\x00" and len(parts) == 1 and " " in data:
        parts = data.split(" ")
    return tuple(parts)
