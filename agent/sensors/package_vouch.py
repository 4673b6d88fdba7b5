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
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.sensors import safe_read

_PROGRAM_DIRS = (b"/usr/bin/", b"/usr/sbin/", b"/usr/lib/", b"/usr/lib64/", b"/usr/libexec/",
                 b"/usr/games/", b"/bin/", b"/sbin/", b"/lib/", b"/lib64/", b"/opt/")
MAX_LIST_BYTES = 64 * 1024 * 1024
MAX_PACKAGES = 100_000


class DpkgVouch:
    """Whether dpkg installed a file and it is unchanged since (see the module text)."""

    def __init__(self, root: Path = Path("/")) -> None:
        self._info = root / "var/lib/dpkg/info"
        self._root = root
        self._stamp: int | None = None
        # hash(path) -> its package list's mtime. Hashes, not paths: 54,000 program paths
        # on a desktop cost 14 MiB as strings, a quarter of that as hashes. bytes hashes are
        # salted per process, so no one can pick a path that collides with a packaged one.
        self._installed: dict[int, float] = {}

    def load(self) -> DpkgVouch:
        """Build the index now (a quarter second on a desktop), not in the first scan."""
        self._refresh()
        return self

    def __call__(self, path: str, info: os.stat_result) -> bool:
        self._refresh()
        for candidate in _merged_usr(path):
            installed = self._installed.get(hash(os.fsencode(candidate)))
            if installed is not None:
                return info.st_ctime <= installed
        return False

    def _refresh(self) -> None:
        try:
            stamp = self._info.stat().st_mtime_ns
        except OSError:
            self._installed, self._stamp = {}, None
            return
        if stamp == self._stamp:
            return
        installed: dict[int, float] = {}
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
            listed_at = st.st_mtime  # one float shared by all the package's paths
            # Bytes throughout: no decoding of 8 MB of lists (paths are the file system's).
            for line in text.splitlines():
                if line.startswith(_PROGRAM_DIRS):
                    installed[hash(line)] = listed_at
        self._installed, self._stamp = installed, stamp


def _merged_usr(path: str) -> tuple[str, ...]:
    """`path`, and its other spelling on a merged-/usr system (/bin/x is /usr/bin/x)."""
    if path.startswith("/usr/") and path[4:].startswith(("/bin/", "/sbin/", "/lib/",
                                                          "/lib64/")):
        return path, path[4:]
    if path.startswith(("/bin/", "/sbin/", "/lib/", "/lib64/")):
        return path, "/usr" + path
    return (path,)
