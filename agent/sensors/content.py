"""The content sensor's reader: which catalog app an executable is, by its bytes.

A file is known by its identity (device, inode, modification time, size): an
unchanged file is read once, ever (per agent run), however many processes run
it or scans meet it. A file is read through agent.sensors.safe_read (no FIFO,
device or link out of its home is ever opened), at most `max_file_bytes` of
it, and the reads of all files together are paced by a `ReadBudget` (bytes
per second, with a burst so a single new program is identified at once).

What is looked for comes from the policy (policies/content_match.py): byte
strings in one linear RE2 pass over the file; on a PE file, its version
resource and Authenticode signer (agent/sensors/executable_meta.py); on macOS,
its code signature (`codesign -dv`, behind a thin reader tests replace).
Files that are not executables (no ELF, PE or Mach-O header) stop after their
first bytes.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.sensors import safe_read
from agent.sensors.executable_meta import (
    codesign_ids,
    is_executable_header,
    pe_metadata,
    read_order,
)
from policies.content_match import ContentMatcher, ContentScan

# Nothing we look for is bigger (Telegram Desktop is 75 MB, Electron apps ~180 MB);
# past this only the first bytes are searched.
MAX_FILE_BYTES = 512 * 1024 * 1024
# Sustained reading, and what may be read at once before pacing starts: a new
# 75 MB program is identified at full speed, a burst of new big files is spread out.
READ_RATE = 64 * 1024 * 1024
READ_BURST = 160 * 1024 * 1024
# RE2 searches a chunk at a few hundred MB/s whatever its size: a bigger one would only
# hold more memory while a file is read.
_CHUNK = 1024 * 1024
_HEADER = 64 * 1024
_CACHE_ENTRIES = 16384

FileKey = tuple[int, int, int, int]
# `codesign -dv` output for a file or bundle; None where there is no codesign.
CodesignReader = Callable[[Path], str | None]
# Whether the package database vouches for the file at this path (package_vouch.py).
Vouch = Callable[[str, os.stat_result], bool]


class ReadBudget:
    """A token bucket of bytes: `take(n)` waits until `n` more bytes may be read."""

    def __init__(self, rate: float = READ_RATE, burst: float = READ_BURST, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a read budget needs a positive rate and burst")
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def take(self, size: int) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= size
            debt = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if debt > 0:
            self.waited += debt
            self._sleep(debt)


@dataclass
class ContentStats:
    files_read: int = 0
    bytes_read: int = 0
    cache_hits: int = 0
    # Not read: the package database vouches for them.
    vouched: int = 0


class ContentIdentifier:
    """Which content signatures a file matches, each file read once."""

    def __init__(
        self,
        matcher: ContentMatcher,
        *,
        budget: ReadBudget | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
        proc: Path | None = None,
        codesign: CodesignReader | None = None,
        vouch: Vouch | None = None,
        max_entries: int = _CACHE_ENTRIES,
    ) -> None:
        self.matcher = matcher
        self.budget = budget or ReadBudget()
        self.max_file_bytes = max_file_bytes
        self._proc = proc if proc is not None else _default_proc()
        self._codesign = codesign
        self._vouch = vouch
        self._cache: OrderedDict[FileKey, tuple[str, ...]] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self.stats = ContentStats()

    def identify_process(self, exe: str, pid: int | None = None) -> tuple[str, ...]:
        """The signatures a running program matches (its image, via /proc/<pid>/exe on Linux:
        the path may since have been replaced by another file, or a FIFO)."""
        source = f"{self._proc}/{pid}/exe" if self._proc and pid is not None else exe
        try:
            with safe_read.open_file(source, follow=True) as (handle, info):
                return self._identify(handle, info, Path(exe), exe)
        except OSError:
            return ()

    def identify_file(self, path: Path, beneath: Path, logical: str | None = None
                      ) -> tuple[str, ...]:
        """The signatures a file at rest matches; never leaves `beneath` (its home).
        `logical`: its path on the machine it belongs to (when scanning a mounted image)."""
        with safe_read.open_file(path, beneath=beneath) as (handle, info):
            return self._identify(handle, info, path, logical or str(path))

    # -- internals ------------------------------------------------------------

    def _identify(self, handle: io.FileIO, info: os.stat_result, path: Path, logical: str
                  ) -> tuple[str, ...]:
        key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
                return cached
        if self._vouch is not None and self._vouch(logical, info):
            self.stats.vouched += 1
            refs: tuple[str, ...] = ()
        else:
            refs = self._read(handle, info.st_size, path)
        with self._lock:
            self._cache[key] = refs
            if len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return refs

    def _read(self, handle: io.FileIO, size: int, path: Path) -> tuple[str, ...]:
        cap = min(size, self.max_file_bytes)
        self.budget.take(min(cap, _HEADER))
        header = handle.read(min(cap, _HEADER))
        self.stats.files_read += 1
        self.stats.bytes_read += len(header)
        if not is_executable_header(header):
            return ()
        matcher = self.matcher
        keep_whole = matcher.has_pe and header[:2] == b"MZ"
        scan = matcher.scan()
        scan.feed(header)
        if keep_whole:
            # The version resource and the signature are parsed from the whole file.
            kept = [header, self._read_range(handle, len(header), cap - len(header), scan)]
        elif matcher.has_strings:
            self._read_until_match(handle, header, cap, scan)
        refs = list(scan.matches())
        if keep_whole:
            fields, signer = pe_metadata(b"".join(kept))
            refs += matcher.match_pe(fields, signer)
        if matcher.has_codesign and self._codesign is not None:
            team_id, signing_id = codesign_ids(self._codesign(path))
            refs += matcher.match_codesign(team_id, signing_id)
        return tuple(dict.fromkeys(refs))


    def _read_until_match(self, handle: io.FileIO, header: bytes, cap: int, scan: ContentScan
                          ) -> None:
        """Search the file (an ELF's data segments only, the largest read-only one first)
        and stop at the first complete match: one matching signature names the app, and
        a running program's finding waits on it."""
        for offset, length in read_order(header, cap):
            if offset + length <= len(header):
                continue  # already searched
            start = max(offset, len(header))
            scan.gap()  # not contiguous with what came before
            handle.seek(start)
            self._read_range(handle, start, offset + length - start, scan, stop_on_match=True)
            if scan.matches():
                return

    def _read_range(self, handle: io.FileIO, start: int, length: int, scan: ContentScan,
                    stop_on_match: bool = False) -> bytes:
        """`length` bytes from `start` (the handle is there), paced and fed to `scan`;
        returned only when not stopping on a match (PE files are parsed whole).

        Read into one buffer of at most `_CHUNK` bytes, searched in place: a file costs
        that much memory whatever its size (the PE files kept whole aside)."""
        kept: list[bytes] = []
        buffer = memoryview(bytearray(min(length, _CHUNK)))
        left = length
        while left > 0:
            want = min(left, len(buffer))
            self.budget.take(want)
            got = handle.readinto(buffer[:want])
            if not got:
                break
            chunk = buffer[:got]
            self.stats.bytes_read += got
            left -= got
            scan.feed(chunk)
            if stop_on_match:
                if scan.matches():
                    break
            else:
                kept.append(bytes(chunk))
        return b"".join(kept)


def _default_proc() -> Path | None:
    proc = Path("/proc")
    return proc if sys.platform.startswith("linux") and (proc / "self/exe").exists() else None
