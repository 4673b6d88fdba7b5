"""The process sensor: what runs, noticed when it starts and when it exits.

The first pass reads every process. After that a tick reads only the new
ones, so an idle machine costs almost nothing however many processes it runs:
on Linux a tick first asks the kernel for the last pid it handed out (one
small read) and, when that moved, probes just the pids in between; elsewhere
it lists pids and reads those it has not seen. A process is known by pid +
start time, so a reused pid is a new process.

Two races are handled on purpose:
- fork then exec: a pid can be read between the two, still wearing its
  parent's name, or even across the exec (its name before, its exe after).
  Young processes are read again in full as they age, and a changed
  name/exe/command line replaces the earlier observation.
- exit: pids with open findings are checked every tick, so a finding
  resolves promptly even while its process is a zombie (exited, not yet
  reaped) or its pid was reused; other exits are noticed by the listings.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from agent.sensors import safe_read
from agent.sensors.content import ContentIdentifier
from agent.sensors.loader_launch import running_program
from agent.sensors.process_readers import ProcessInfo, ProcessReader, PsutilReader
from policies.observations import ProcessObservation

# How long after its start a process is re-read, to catch an exec after fork.
YOUNG_SECONDS = 2.0
# Start times are the kernel's boot time, in whole seconds (/proc/stat btime, as
# psutil reads it), plus the process's start ticks: a process can look up to a
# second older than it is. Young means young by the slowest reckoning.
START_TIME_SLACK = 1.0
# Ticks read only the processes created since the last tick (when the reader
# can tell which); all pids are listed this often anyway, so exits of processes
# without findings are forgotten in bounded time.
RELIST_SECONDS = 30.0
# Hashing a huge file would stall a tick; nothing we look for is this big.
MAX_HASH_BYTES = 1024 * 1024 * 1024
_HASH_CHUNK = 1024 * 1024


def default_reader() -> ProcessReader:
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        from agent.sensors.procfs import ProcfsReader

        return ProcfsReader()
    return PsutilReader()


class ExeHasher:
    """SHA-256 of what processes run, cached by the file's identity (device, inode, mtime, size).

    On Linux the running image is read through /proc/<pid>/exe, not the path it
    was started from: the file at that path may since have been deleted and
    replaced (by another program, or by a FIFO that would hang the read), and
    the image is what runs. Elsewhere the path is all there is. Either way the
    file is opened by agent.sensors.safe_read: without blocking, a regular file
    only, at most MAX_HASH_BYTES read.
    """

    def __init__(self, max_entries: int = 4096, proc: Path | None = None) -> None:
        self._cache: OrderedDict[tuple[int, int, int, int], str | None] = OrderedDict()
        self._max = max_entries
        self._proc = proc if proc is not None else _default_proc()

    def digest(self, exe: str, pid: int | None = None) -> str | None:
        source = f"{self._proc}/{pid}/exe" if self._proc and pid is not None else exe
        try:
            with safe_read.open_file(source, follow=True) as (handle, info):
                key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
                value = _sha256(handle) if info.st_size <= MAX_HASH_BYTES else None
        except OSError:
            return None
        self._cache[key] = value
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return value


def _sha256(handle: BinaryIO) -> str | None:
    digest = hashlib.sha256()
    left = MAX_HASH_BYTES + 1  # the size was checked; a file growing meanwhile is cut off
    while left > 0:
        chunk = handle.read(min(left, _HASH_CHUNK))
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        left -= len(chunk)
    return None


def _default_proc() -> Path | None:
    proc = Path("/proc")
    return proc if sys.platform.startswith("linux") and (proc / "self/exe").exists() else None


@dataclass
class ProcessChanges:
    """What one tick saw: processes that appeared, and identities that went away.

    A process re-read after exec appears in both: its old identity in `gone`
    and its new observation (same identity) in `new`.
    """

    new: list[ProcessObservation] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    create_time: float
    observation: ProcessObservation | None  # None: a zombie
    denied: bool


class ProcessSensor:
    def __init__(
        self,
        reader: ProcessReader | None = None,
        *,
        hash_exes: bool = False,
        privileged: bool = True,
        own_pid: int | None = None,
        young_seconds: float = YOUNG_SECONDS,
        clock: Callable[[], float] = time.time,
        hasher: ExeHasher | None = None,
        content: ContentIdentifier | None = None,
        identified: Callable[[ProcessObservation], bool] = lambda observation: False,
    ) -> None:
        self._reader = reader or default_reader()
        self._hash_exes = hash_exes
        self._privileged = privileged
        self._own_pid = os.getpid() if own_pid is None else own_pid
        self._young_seconds = young_seconds
        self._clock = clock
        self._hasher = hasher or ExeHasher()
        # Reads the executable of each process the policy cannot already name.
        self._content = content
        self._identified = identified
        self._known: dict[int, _Entry] = {}
        # Young pids -> when to look at them again (backing off as they age).
        self._young: dict[int, float] = {}
        self._generation: int | None = None
        self._listed_at = 0.0

    # -- public -------------------------------------------------------------

    def scan(self) -> list[ProcessObservation]:
        """The first pass: read every process and remember it."""
        self._known.clear()
        self._young.clear()
        self._mark_listed()
        for info in self._reader.read_all():
            if info.pid != self._own_pid:
                self._remember(info)
        return self.observations()

    def poll(self, verify: Iterable[int] = ()) -> ProcessChanges:
        """One tick: read only new pids; notice exits. `verify`: pids to check closely."""
        changes = ProcessChanges()
        for pid in set(verify) & self._known.keys():
            self._verify(pid, changes)
        now = self._clock()
        for pid in [pid for pid, due in self._young.items() if due <= now]:
            self._recheck(pid, now, changes)
        created = self._created()
        if created is None:
            self._list(changes)
        else:
            for pid in created:
                self._arrived(pid, changes)
        return changes

    def rescan(self) -> ProcessChanges:
        """A full pass reconciled with what is known: the slow safety net.

        Catches what the ticks cannot: a long-running process that exec'd
        another program, or a pid reused between two ticks.
        """
        changes = ProcessChanges()
        seen: set[int] = set()
        self._mark_listed()
        for info in self._reader.read_all():
            if info.pid == self._own_pid:
                continue
            seen.add(info.pid)
            entry = self._known.get(info.pid)
            if entry is None:
                self._add(info, changes)
            elif entry.create_time != info.create_time or _changed(entry, info):
                self._forget(info.pid, changes)
                self._add(info, changes)
        for pid in self._known.keys() - seen:
            self._forget(pid, changes)
        return changes

    def exec_seen(self, pids: Iterable[int]) -> ProcessChanges:
        """Read pids the kernel just saw exec (agent.sensors.exec_events) at once.

        An exec keeps the pid and start time but changes the program: a known pid
        whose name, exe or command line changed is replaced, like a re-read young one.
        """
        changes = ProcessChanges()
        for pid in dict.fromkeys(pids):
            if pid == self._own_pid:
                continue
            info = self._reader.read(pid)
            if info is None:
                continue  # gone already: nothing runs to judge
            entry = self._known.get(pid)
            if entry is not None:
                if entry.create_time == info.create_time and not _changed(entry, info):
                    continue
                self._forget(pid, changes)
            self._add(info, changes)
        return changes

    def observations(self) -> list[ProcessObservation]:
        return [e.observation for e in self._known.values() if e.observation is not None]

    def set_hash_exes(self, hash_exes: bool) -> None:
        """Start (or stop) hashing executables, e.g. after a policy update."""
        if hash_exes == self._hash_exes:
            return
        self._hash_exes = hash_exes
        for entry in self._known.values():
            if entry.observation is not None:
                entry.observation = self._with_hash(entry.observation)

    def set_content(self, content: ContentIdentifier | None,
                    identified: Callable[[ProcessObservation], bool]) -> None:
        """Look at executables' content with these signatures (None: stop), e.g. after a
        policy update; the processes already known are looked at again (cached files are
        not read again)."""
        self._content, self._identified = content, identified
        for entry in self._known.values():
            if entry.observation is not None:
                entry.observation = self._with_content(entry.observation)

    @property
    def denied_count(self) -> int:
        """Running processes that could not be fully inspected."""
        return sum(1 for entry in self._known.values() if entry.denied)

    def warnings(self) -> list[str]:
        count = self.denied_count
        if not count:
            return []
        processes = f"{count} process" if count == 1 else f"{count} processes"
        if self._privileged:
            return [f"{processes} could not be fully inspected (access denied)"]
        return [
            f"ran as ordinary user: {processes} of other users could not be fully "
            "inspected (run as root/Administrator to see them)"
        ]

    # -- internals ----------------------------------------------------------

    def _mark_listed(self) -> None:
        # Read the generation before listing: a process created during the
        # listing then shows up as created on the next tick.
        self._generation = self._reader.generation()
        self._listed_at = self._clock()

    def _created(self) -> list[int] | None:
        """Pids created since the last tick, when the reader can tell cheaply; None: list."""
        before = self._generation
        self._generation = self._reader.generation()
        if (self._generation is None or before is None
                or self._clock() - self._listed_at >= RELIST_SECONDS):
            return None
        if self._generation == before:
            return []
        return self._reader.created_between(before, self._generation)

    def _list(self, changes: ProcessChanges) -> None:
        self._listed_at = self._clock()
        listed = set(self._reader.pids())
        listed.discard(self._own_pid)
        for pid in self._known.keys() - listed:
            self._forget(pid, changes)
        for pid in sorted(listed - self._known.keys()):
            info = self._reader.read(pid)
            if info is not None:
                self._add(info, changes)

    def _arrived(self, pid: int, changes: ProcessChanges) -> None:
        if pid == self._own_pid:
            return
        info = self._reader.read(pid)
        if info is None:
            return
        entry = self._known.get(pid)
        if entry is not None:
            if entry.create_time == info.create_time:
                return
            self._forget(pid, changes)  # the pid was reused
        self._add(info, changes)

    def _observe(self, info: ProcessInfo) -> ProcessObservation:
        name, exe = running_program(info)
        return self._with_content(self._with_hash(ProcessObservation(
            pid=info.pid, name=name, create_time=info.create_time, exe=exe,
            cmdline=info.cmdline, username=info.username, ppid=info.ppid,
        )))

    def _with_content(self, observation: ProcessObservation) -> ProcessObservation:
        bare = replace(observation, content=()) if observation.content else observation
        if self._content is None or not bare.exe or self._identified(bare):
            return bare
        return replace(bare, content=self._content.identify_process(bare.exe, bare.pid))

    def _with_hash(self, observation: ProcessObservation) -> ProcessObservation:
        if not self._hash_exes or not observation.exe:
            return replace(observation, sha256=None) if observation.sha256 else observation
        return replace(observation, sha256=self._hasher.digest(observation.exe, observation.pid))

    def _remember(self, info: ProcessInfo) -> ProcessObservation | None:
        observation = None if info.zombie else self._observe(info)
        self._known[info.pid] = _Entry(info.create_time, observation, info.denied)
        if not info.zombie and self._is_young(self._clock() - info.create_time):
            self._young[info.pid] = 0.0  # at the next tick
        return observation

    def _add(self, info: ProcessInfo, changes: ProcessChanges) -> None:
        observation = self._remember(info)
        if observation is not None:
            changes.new.append(observation)

    def _forget(self, pid: int, changes: ProcessChanges) -> None:
        entry = self._known.pop(pid)
        self._young.pop(pid, None)
        if entry.observation is not None:
            changes.gone.append(entry.observation.identity)

    def _verify(self, pid: int, changes: ProcessChanges) -> None:
        entry = self._known[pid]
        state = self._reader.start_time(pid)
        if state is not None and state[0] == entry.create_time and not state[1]:
            return
        self._forget(pid, changes)
        if state is None:
            return
        # A zombie stays known (without an observation) so it is not read again as new;
        # a different start time is a reused pid: a new process.
        info = self._reader.read(pid)
        if info is not None:
            self._add(info, changes)

    def _is_young(self, age: float) -> bool:
        return self._young_seconds > 0 and age < self._young_seconds + START_TIME_SLACK

    def _recheck(self, pid: int, now: float, changes: ProcessChanges) -> None:
        entry = self._known[pid]
        age = now - entry.create_time
        if not self._is_young(age):
            del self._young[pid]
        else:
            # Look again when twice as old: a launcher usually execs within
            # milliseconds, a slow wrapper (snap, flatpak) within a second or two.
            self._young[pid] = now + age
        # A full read, never just the exe: the observation looked at may itself be
        # torn. A read is several files (name, command line, exe), and a process
        # that exec'd between them was seen with its launcher's name but its new
        # exe; an unchanged exe would then keep that stale name for good.
        info = self._reader.read(pid)
        if info is None:
            self._forget(pid, changes)
        elif info.create_time != entry.create_time or _changed(entry, info):
            self._forget(pid, changes)
            self._add(info, changes)


def _changed(entry: _Entry, info: ProcessInfo) -> bool:
    before = entry.observation
    if before is None or info.zombie:
        return (before is None) != info.zombie
    return (before.name, before.exe, before.cmdline) != (*running_program(info), info.cmdline)
