"""Exec-time blocking on Linux: the kernel asks before each exec, the policy answers.

Rules usable at exec are those that look at the file: exe path globs, names
(the file's name) and SHA-256 (read through the event's own fd, never by
path). Safety, as fapolicyd learned it the hard way:

- The agent's own process is allowed at once, on the reading thread; a
  request from its process tree is never denied.
- Decisions are cached by (device, inode, change time, size): a rewritten file
  has a new change time. The cache is dropped when the policy changes.
- The queue between the reading thread and the deciding thread is bounded;
  when it is full, or a decision raises, the answer is ALLOW (fail-open),
  counted and reported: a broken agent must not stop the machine.
- A deadman thread closes the group when a decision has been pending longer
  than `stall_seconds`; the kernel then lets every waiting exec through.
  `kill -9` does the same, since the kernel closes a dead process's fds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.prevention import fanotify
from policies.engine import Engine, Finding
from policies.observations import ProcessObservation

# Nothing we look for is bigger; a file past this is judged without its hash.
MAX_HASH_BYTES = 512 * 1024 * 1024
_CHUNK = 1024 * 1024
CACHE_ENTRIES = 16_384
QUEUE_SIZE = 800  # fapolicyd's default
STALL_SECONDS = 5.0


@dataclass(frozen=True)
class Blocked:
    """One exec the policy denied (or, in audit mode, would have): what the server hears."""

    finding: Finding
    path: str
    sha256: str | None
    pid: int
    user: str | None
    parent: str | None  # the program that asked to exec it
    enforced: bool
    # Set when the platform's own blocker (Santa, AppLocker, fapolicyd) decided: which, and why.
    native: str = ""


@dataclass
class BlockerStats:
    decisions: int = 0
    denied: int = 0
    cache_hits: int = 0
    fail_open: int = 0  # answered ALLOW because the queue was full or a decision failed
    overflows: int = 0  # the kernel's own queue overflowed
    last_error: str = ""
    latencies: list[float] = field(default_factory=list)  # seconds, when measuring

    def as_dict(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "denied": self.denied,
                "cache_hits": self.cache_hits, "fail_open": self.fail_open,
                "overflows": self.overflows, "last_error": self.last_error}


_CacheKey = tuple[int, int, int, int]


class Blocker:
    """Answers FAN_OPEN_EXEC_PERM events with the engine's `block` rules."""

    def __init__(
        self,
        engine: Engine,
        on_block: Callable[[Blocked], None],
        *,
        queue_size: int = QUEUE_SIZE,
        stall_seconds: float = STALL_SECONDS,
        measure: bool = False,
    ) -> None:
        self._engine = engine
        self._on_block = on_block
        self._queue: queue.Queue[fanotify.PermissionEvent | None] = queue.Queue(queue_size)
        self._stall_seconds = stall_seconds
        self._measure = measure
        self._own_pid = os.getpid()
        self._cache: dict[_CacheKey, Finding | None] = {}
        self._lock = threading.Lock()
        self._group = -1
        self._stop_read, self._stop_write = os.pipe()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._deciding_since: float | None = None
        self._deciding: fanotify.PermissionEvent | None = None
        self._answered_by_deadman = False
        self.stats = BlockerStats()
        # Mounts marked, by mount id; `marked` holds the paths of those still mounted.
        self._marked_ids: set[int] = set()
        self.marked: set[str] = set()
        self.closed_by_deadman = False
        self._reader_gone = threading.Event()

    # -- control ------------------------------------------------------------

    def start(self) -> None:
        """Mark every local mount and answer events; FanotifyUnavailable where refused."""
        self._group = fanotify.init_group()
        try:
            self.mark_mounts()
        except fanotify.FanotifyUnavailable:
            os.close(self._group)
            self._group = -1
            raise
        for target, name in ((self._read, "read"), (self._decide, "decide"),
                             (self._deadman, "deadman"), (self._follow_mounts, "mounts")):
            thread = threading.Thread(target=target, name=f"warden-block-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        os.write(self._stop_write, b"x")
        self._queue.put(None)
        for thread in self._threads:
            thread.join(2.0)
        self._close_group()
        for fd in (self._stop_read, self._stop_write):
            os.close(fd)

    def set_engine(self, engine: Engine) -> None:
        """A new policy: earlier decisions no longer hold."""
        with self._lock:
            self._engine = engine
            self._cache.clear()

    @property
    def active(self) -> bool:
        return self._group >= 0

    def mark_mounts(self) -> list[str]:
        """Mark mounts not marked yet (at start, and when the mount table changes)."""
        added = []
        present: set[str] = set()
        for mount in fanotify.local_mounts():
            if mount.mount_id not in self._marked_ids:
                try:
                    fanotify.mark_mount(self._group, mount.path)
                except OSError:
                    continue  # gone meanwhile, or one we may not see: the next change retries
                self._marked_ids.add(mount.mount_id)
                added.append(mount.path)
            present.add(mount.path)
        self.marked = present
        return added

    # -- threads ------------------------------------------------------------

    def _read(self) -> None:
        try:
            self._read_events()
        finally:
            self._reader_gone.set()

    def _read_events(self) -> None:
        poller = select.poll()
        poller.register(self._group, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while not self._stopping.is_set():
            ready = poller.poll()
            if any(fd == self._stop_read for fd, _ in ready) or self._group < 0:
                return
            try:
                events = fanotify.read_events(self._group)
            except OSError:
                return  # the deadman closed the group
            for event in events:
                if event.fd == fanotify.FAN_NOFD:
                    self.stats.overflows += 1
                    continue
                if event.pid == self._own_pid:
                    self._answer(event, True)  # our own exec: never wait on ourselves
                    continue
                try:
                    self._queue.put_nowait(event)
                except queue.Full:
                    self.stats.fail_open += 1
                    self._answer(event, True)

    def _decide(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            started = time.monotonic()
            with self._lock:
                self._deciding, self._deciding_since = event, started
            blocked: Blocked | None = None
            try:
                blocked = self._judge(event)
                allow = blocked is None or not blocked.enforced
            except Exception as exc:  # fail-open: a bug here must not stop the machine
                self.stats.fail_open += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                allow = True
            with self._lock:
                self._deciding = self._deciding_since = None
                answered, self._answered_by_deadman = self._answered_by_deadman, False
            if answered:
                os.close(event.fd)
                continue
            if blocked is None:
                self._answer(event, allow)
            else:
                self._answer(event, allow, close=False)
                blocked = self._with_hash(blocked, event.fd)
                os.close(event.fd)
            self.stats.decisions += 1
            if self._measure:
                self.stats.latencies.append(time.monotonic() - started)
            if blocked is not None:
                self.stats.denied += blocked.enforced
                self._on_block(blocked)

    @staticmethod
    def _with_hash(blocked: Blocked, fd: int) -> Blocked:
        """The report's hash, read after the answer: the exec does not wait for it."""
        if blocked.sha256 is not None:
            return blocked
        try:
            if os.fstat(fd).st_size > MAX_HASH_BYTES:
                return blocked
            return dataclasses.replace(blocked, sha256=_sha256(fd))
        except OSError:
            return blocked

    def _deadman(self) -> None:
        while not self._stopping.wait(min(0.5, self._stall_seconds / 4)):
            since = self._deciding_since
            if since is not None and time.monotonic() - since > self._stall_seconds:
                self._give_up()
                return

    def _give_up(self) -> None:
        """Let every waiting exec through and close the group: blocking is off from now."""
        self.stats.last_error = (f"a decision took over {self._stall_seconds:g} s: "
                                 "blocking switched off, execs are allowed")
        self.closed_by_deadman = True
        self._stopping.set()
        with self._lock:
            stuck = self._deciding
            if stuck is not None:
                # Answer it; the stuck thread closes its fd when (if) it returns.
                self._answered_by_deadman = True
                with contextlib.suppress(OSError):
                    os.write(self._group, fanotify.response(stuck.fd, allow=True))
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is not None:
                self._answer(event, True)
        # Wake the reading thread: its poll holds the group open, and only the last
        # reference's close makes the kernel allow whatever is still pending.
        os.write(self._stop_write, b"x")
        self._reader_gone.wait(2.0)
        self._close_group()

    def _follow_mounts(self) -> None:
        # /proc/self/mountinfo polls POLLPRI when the mount table changes.
        with open("/proc/self/mountinfo", "rb") as table:
            poller = select.poll()
            poller.register(table.fileno(), select.POLLPRI)
            poller.register(self._stop_read, select.POLLIN)
            while not self._stopping.is_set():
                ready = poller.poll()
                if any(fd == self._stop_read for fd, _ in ready) or self._group < 0:
                    return
                table.seek(0)
                table.read()
                self.mark_mounts()

    # -- decisions ----------------------------------------------------------

    def _answer(self, event: fanotify.PermissionEvent, allow: bool, close: bool = True) -> None:
        group = self._group
        try:
            if group >= 0:
                os.write(group, fanotify.response(event.fd, allow))
        except OSError as exc:
            self.stats.last_error = f"answering an exec failed: {exc}"
        finally:
            if close:
                os.close(event.fd)

    def _judge(self, event: fanotify.PermissionEvent) -> Blocked | None:
        info = os.fstat(event.fd)
        key = (info.st_dev, info.st_ino, info.st_ctime_ns, info.st_size)
        with self._lock:
            engine = self._engine
            cached = key in self._cache
            finding = self._cache.get(key)
        path = os.readlink(f"/proc/self/fd/{event.fd}")
        digest = None
        if cached:
            self.stats.cache_hits += 1
        else:
            if engine.needs_sha256 and info.st_size <= MAX_HASH_BYTES:
                digest = _sha256(event.fd)
            name = path.rsplit("/", 1)[-1]
            finding = engine.exec_block(ProcessObservation(
                pid=event.pid, name=name, exe=path, sha256=digest))
            with self._lock:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = finding
        if finding is None:
            return None
        enforced = engine.mode == "enforce" and not self._in_own_tree(event.pid)
        user, parent = _who(event.pid)
        return Blocked(finding, path, digest, event.pid, user, parent, enforced)

    def _in_own_tree(self, pid: int) -> bool:
        for _ in range(64):
            if pid == self._own_pid:
                return True
            if pid <= 1:
                return False
            parent = _ppid(pid)
            if parent is None:
                return False
            pid = parent
        return False

    def _close_group(self) -> None:
        group, self._group = self._group, -1
        if group >= 0:
            os.close(group)


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, _CHUNK, offset)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        offset += len(chunk)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The name (field 2) may hold spaces and parentheses: parse after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def _who(pid: int) -> tuple[str | None, str | None]:
    """The user asking for the exec and the program asking (still the parent's image)."""
    user = parent = None
    try:
        import pwd  # POSIX only: imported here so that Windows can import `Blocked`

        uid = os.stat(f"/proc/{pid}").st_uid
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        parent = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        pass
    return user, parent
