"""Programs the package database vouches for, so the content sensor need not read them.

A file dpkg installed is one of the package's own (its path is in
`/var/lib/dpkg/info/<package>.list`) and unchanged since, when its inode
change time (ctime, which no user can set back: copying a file over it, or
`touch`, moves it) is no later than that list file's modification time (dpkg
writes the list once the package's files are in place). Such a file is a
distribution's program, not a renamed messenger, and is not read: on a
desktop that leaves the agent's first pass reading almost nothing. A
messenger installed as a package is found by the installed-apps sensor.

Only the folders programs live in are indexed (bin, sbin, lib, libexec, games,
opt), so the index stays small. It is rebuilt when the dpkg info folder changes.

The index is flat arrays, not a dict: a desktop's 54,000 program paths as a dict
of hashes to times held 4.4 MiB of Python objects, and building it left another
8 MiB of the allocator's pools pinned by them (the lists' lines were freed
around objects that lived on). As 8-byte hashes and 4-byte package numbers they
take 0.6 MiB, and no object made per path outlives its list.
"""

from __future__ import annotations

import os
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from pathlib import Path

from agent.sensors import safe_read

_PROGRAM_DIRS = (b"/usr/bin/", b"/usr/sbin/", b"/usr/lib/", b"/usr/lib64/", b"/usr/libexec/",
                 b"/usr/games/", b"/bin/", b"/sbin/", b"/lib/", b"/lib64/", b"/opt/")
# A list's lines in those folders, found one at a time: splitting a list into lines
# made every line an object at once (a big package has tens of thousands).
_PROGRAM_LINE = re.compile(b"^(?:" + b"|".join(re.escape(folder) for folder in _PROGRAM_DIRS)
                           + b")[^\n]*", re.MULTILINE)
MAX_LIST_BYTES = 64 * 1024 * 1024
MAX_PACKAGES = 100_000


class DpkgVouch:
    """Whether dpkg installed a file and it is unchanged since (see the module text)."""

    def __init__(self, root: Path = Path("/")) -> None:
        self._info = root / "var/lib/dpkg/info"
        self._root = root
        self._stamp: int | None = None
        self._index = _Index()

    def load(self) -> DpkgVouch:
        """Build the index now (a quarter second on a desktop), not in the first scan."""
        self._refresh()
        return self

    def __call__(self, path: str, info: os.stat_result) -> bool:
        self._refresh()
        for candidate in _merged_usr(path):
            installed = self._index.listed_at(os.fsencode(candidate))
            if installed is not None:
                return info.st_ctime <= installed
        return False

    def __len__(self) -> int:
        """How many program paths the index holds."""
        return len(self._index)

    def _refresh(self) -> None:
        try:
            stamp = self._info.stat().st_mtime_ns
        except OSError:
            self._index, self._stamp = _Index(), None
            return
        if stamp == self._stamp:
            return
        index = _Index()
        try:
            entries = safe_read.list_dir(self._info, MAX_PACKAGES, beneath=self._root)
        except OSError:
            entries = []
        for entry in entries:
            if entry.kind != "file" or not entry.name.endswith(".list"):
                continue
            try:
                # Anchored at the info folder: one openat per list, not one per component.
                with safe_read.open_file(Path(entry.path), beneath=self._info) as (handle, st):
                    text = safe_read.read_capped(handle, MAX_LIST_BYTES)
            except OSError:
                continue
            # Bytes throughout: no decoding of 8 MB of lists (paths are the file system's).
            index.add(st.st_mtime, (hash(found.group()) for found in
                                    _PROGRAM_LINE.finditer(text)))
        index.sort()
        self._index, self._stamp = index, stamp


class _Index:
    """Program paths (by hash) -> the mtime of the package list that names them.

    Hashes, not paths: bytes hashes are salted per process, so no one can pick a path
    that collides with a packaged one. Sorted by hash and searched by bisection; a
    path several packages list (a diversion, a package taking over another's file)
    takes the latest of their lists' times: the last time dpkg put it in place.
    """

    def __init__(self) -> None:
        self._hashes = array("q")
        self._packages = array("I")  # each hash's package, an index into _listed_at
        self._listed_at = array("d")

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, listed_at: float, hashes: Iterable[int]) -> None:
        """One package's paths, by their hash()."""
        before = len(self._hashes)
        self._hashes.extend(hashes)
        self._packages.extend(array("I", [len(self._listed_at)]) * (len(self._hashes) - before))
        self._listed_at.append(listed_at)

    def sort(self) -> None:
        order = sorted(range(len(self._hashes)), key=self._hashes.__getitem__)
        self._hashes = array("q", (self._hashes[i] for i in order))
        self._packages = array("I", (self._packages[i] for i in order))

    def listed_at(self, path: bytes) -> float | None:
        key = hash(path)
        first, end = bisect_left(self._hashes, key), bisect_right(self._hashes, key)
        if first == end:
            return None
        return max(self._listed_at[self._packages[at]] for at in range(first, end))


def _merged_usr(path: str) -> tuple[str, ...]:
    """`path`, and its other spelling on a merged-/usr system (/bin/x is /usr/bin/x)."""
    if path.startswith("/usr/") and path[4:].startswith(("/bin/", "/sbin/", "/lib/",
                                                          "/lib64/")):
        return path, path[4:]
    if path.startswith(("/bin/", "/sbin/", "/lib/", "/lib64/")):
        return path, "/usr" + path
    return (path,)
