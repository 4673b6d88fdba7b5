"""The installed-apps sensor: what is installed on the machine, for every user.

One sensor, one backend per OS chosen once when it is built
(installed_linux.py, installed_macos.py, installed_windows.py). The backends
read package databases, bundles and the registry; this module adds what every
OS shares: folders named by the policy (data folders like
`~/.local/share/TelegramDesktop`) and unpacked portable apps found by the
files inside them (a `Telegram` folder holding `Telegram` and `Updater`).

Nothing here raises on an unreadable file or folder: the sensor records a
plain sentence in `warnings` and carries on, so an agent running as an
ordinary user still reports what it can see.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from agent.host.platform import current_os
from agent.sensors import safe_read
from agent.sensors.content import ContentIdentifier
from agent.sensors.content_places import identified_files, places
from agent.sensors.homes import MachineRoot, find_homes, home_parents
from agent.sensors.registry import RegistryReader
from agent.sensors.scan_context import (
    MAX_ENTRIES_PER_DIR,
    CodesignReader,
    ScanContext,
    SearchRoot,
    WatchDir,
)
from policies.observations import InstalledObservation
from policies.vocabulary import OS_NAMES, OsName

# Bounds on the hunt for unpacked apps: a home with a huge tree costs a capped
# amount, and the sensor says where it stopped.
MAX_DIRS_PER_ROOT = 5000
# Trees that are big, never hold an unpacked app, or are read by other means.
SKIP_DIRS = frozenset({
    "node_modules", "__pycache__", "site-packages", "dist-packages",
    "Library", "AppData", "Windows", "WindowsApps", "ProgramData",
    "System Volume Information", "proc", "sys",
})
_PLACEHOLDER_DIRS = {
    "%APPDATA%": ("AppData", "Roaming"),
    "%LOCALAPPDATA%": ("AppData", "Local"),
}
_PROGRAM_FILES = ("Program Files", "Program Files (x86)")


class Backend(Protocol):
    """What each OS contributes; the shared folder search is done by the sensor."""

    def scan(self, ctx: ScanContext) -> list[InstalledObservation]: ...

    def search_roots(self, ctx: ScanContext) -> list[SearchRoot]: ...

    def watch_dirs(self, ctx: ScanContext) -> list[WatchDir]: ...


class InstalledAppsSensor:
    """Installed apps on the machine under `root`, reported with the machine's own paths.

    `marker_files` and `marker_globs` come from the policy engine
    (`Engine.folder_marker_files`, `Engine.folder_marker_globs`). `registry`
    and `codesign` replace the Windows registry and macOS `codesign` where this
    machine has neither (tests, or reading another OS's disk image).
    """

    def __init__(
        self,
        root: Path = Path("/"),
        os_name: OsName | None = None,
        marker_files: frozenset[str] = frozenset(),
        marker_globs: Sequence[str] = (),
        *,
        registry: RegistryReader | None = None,
        codesign: CodesignReader | None = None,
        content: ContentIdentifier | None = None,
    ) -> None:
        if os_name is not None and os_name not in OS_NAMES:
            raise ValueError(f"unknown OS {os_name!r}: use linux, macos or windows")
        self.os_name: OsName = os_name or current_os()
        self.machine = MachineRoot(root, self.os_name)
        self.marker_files = marker_files
        self.marker_globs = tuple(marker_globs)
        self.warnings: list[str] = []
        self._backend = _choose_backend(self.machine, registry, codesign)
        # Files in the portable-app places are identified by content when set.
        self.content = content

    def scan(self) -> list[InstalledObservation]:
        ctx = self._context()
        observations = self._backend.scan(ctx)
        observations += self._folders(ctx)
        if self.content is not None:
            observations += identified_files(ctx, self.content)
        self.warnings = ctx.warnings
        unique: dict[str, InstalledObservation] = {}
        for observation in observations:
            unique.setdefault(observation.identity, observation)
        return list(unique.values())

    def watch_paths(self) -> list[Path]:
        """Existing folders where an install or removal shows up."""
        return [watch.path for watch in self._watch_dirs()]

    def recursive_watch_paths(self) -> list[Path]:
        """The subset of `watch_paths` worth watching recursively (pass to InstallWatcher)."""
        return [watch.path for watch in self._watch_dirs() if watch.recursive]

    # -- shared parts ---------------------------------------------------------

    def _context(self) -> ScanContext:
        homes, warnings = find_homes(self.machine)
        return ScanContext(self.machine, homes, self.marker_files, self.marker_globs, warnings)

    def _folders(self, ctx: ScanContext) -> list[InstalledObservation]:
        found: dict[Path, InstalledObservation] = {}
        for glob in self.marker_globs:
            for base, segments, user in _glob_bases(ctx, glob):
                for path in _expand(ctx, base, segments):
                    found.setdefault(path, ctx.folder(path, user))
        if self.marker_files:
            visited: set[Path] = set()
            for root in self._backend.search_roots(ctx):
                for path, contents in _search(ctx, root, visited):
                    if path not in found:
                        logical = self.machine.logical(path)
                        found[path] = InstalledObservation(
                            source="folder", id=logical, path=logical, user=root.user,
                            contents=contents)
        return list(found.values())

    def _watch_dirs(self) -> list[WatchDir]:
        ctx = self._context()
        wanted = list(self._backend.watch_dirs(ctx))
        wanted += [WatchDir(path) for path in home_parents(self.machine)]
        wanted += [WatchDir(root.path, root.watch_recursively)
                   for root in self._backend.search_roots(ctx)]
        if self.content is not None:
            wanted += [WatchDir(place.path, place.depth > 0) for place in places(ctx)]
        for glob in self.marker_globs:
            for base, segments, _ in _glob_bases(ctx, glob):
                # The folder a marker would appear in: its last fixed parent.
                fixed = []
                for segment in segments[:-1]:
                    if _has_wildcard(segment):
                        break
                    fixed.append(segment)
                wanted.append(WatchDir(base.joinpath(*fixed)))
        chosen: dict[Path, WatchDir] = {}
        for watch in wanted:
            if watch.path in chosen and not watch.recursive:
                continue
            # A watch follows the path it is given; one through a link (~/Downloads ->
            # /usr/lib, or /) would watch what is outside the home.
            if safe_read.is_dir(watch.path, beneath=ctx.anchor(watch.path), links=False):
                chosen[watch.path] = watch
        return list(chosen.values())


def _choose_backend(
    machine: MachineRoot, registry: RegistryReader | None, codesign: CodesignReader | None
) -> Backend:
    # Imported here so each OS loads only its own backend.
    if machine.os_name == "linux":
        from agent.sensors.installed_linux import LinuxBackend

        return LinuxBackend()
    if machine.os_name == "macos":
        from agent.sensors.installed_macos import MacBackend

        return MacBackend(codesign)
    from agent.sensors.installed_windows import WindowsBackend

    return WindowsBackend(machine, registry)


def _has_wildcard(segment: str) -> bool:
    return any(char in segment for char in "*?[")


def _glob_bases(ctx: ScanContext, glob: str) -> list[tuple[Path, list[str], str | None]]:
    """Where a folder glob starts on this machine: (folder, remaining segments, user)."""
    text = glob.replace("\\", "/")
    head, _, rest = text.partition("/")
    segments = [segment for segment in rest.split("/") if segment]
    windows = ctx.machine.os_name == "windows"
    if head == "~":
        return [(home.path, segments, home.user) for home in ctx.homes]
    if head.upper() in _PLACEHOLDER_DIRS:
        parts = _PLACEHOLDER_DIRS[head.upper()]
        return [(home.path.joinpath(*parts), segments, home.user)
                for home in ctx.homes] if windows else []
    if head.upper() == "%PROGRAMFILES%":
        return [(ctx.machine.root / name, segments, None) for name in _PROGRAM_FILES] if (
            windows) else []
    if len(head) == 2 and head[1] == ":":
        return [(ctx.machine.root, segments, None)] if windows else []
    if head == "" and not windows:
        return [(ctx.machine.root, segments, None)]
    return []


def _expand(ctx: ScanContext, base: Path, segments: Sequence[str], budget: int = 4) -> list[Path]:
    """The existing folders under `base` that match the glob `segments`."""
    if not segments:
        return [base] if ctx.is_dir(base) else []
    segment, rest = segments[0], segments[1:]
    if segment == "**":
        # Zero or more folders; bounded so a stray `**` cannot walk a whole disk.
        matches = _expand(ctx, base, rest, budget)
        if budget > 0:
            for entry in ctx.subdirs(base):
                matches += _expand(ctx, Path(entry.path), segments, budget - 1)
        return matches
    if not _has_wildcard(segment) and not ctx.caseless:
        return _expand(ctx, base / segment, rest, budget)
    pattern = segment.casefold() if ctx.caseless else segment
    matches = []
    for entry in ctx.subdirs(base):
        name = entry.name.casefold() if ctx.caseless else entry.name
        if fnmatch.fnmatchcase(name, pattern):
            matches += _expand(ctx, Path(entry.path), rest, budget)
    return matches


def _search(
    ctx: ScanContext, root: SearchRoot, visited: set[Path]
) -> Iterator[tuple[Path, frozenset[str]]]:
    """Folders under `root` holding marker files, breadth-first, within the bounds."""
    queue = deque([(root.path, 0)])
    seen = 0
    while queue:
        path, level = queue.popleft()
        if path in visited:
            continue
        visited.add(path)
        seen += 1
        if seen > MAX_DIRS_PER_ROOT:
            ctx.warn(f"stopped looking for unpacked apps under {ctx.machine.logical(root.path)} "
                     f"after {MAX_DIRS_PER_ROOT} folders")
            return
        entries = ctx.entries(path)
        contents = ctx.markers_in(entries)
        if contents:
            yield path, contents
        if level >= root.depth:
            continue
        for entry in entries:
            # Links are not entered: a link loop or a link to / must not widen the search.
            if entry.is_dir and _worth_entering(ctx, entry.name):
                queue.append((Path(entry.path), level + 1))


def _worth_entering(ctx: ScanContext, name: str) -> bool:
    if name in ctx.marker_files:
        return True  # a marker may itself be a folder (tdata)
    return not name.startswith((".", "$")) and name not in SKIP_DIRS


__all__ = ["MAX_ENTRIES_PER_DIR", "CodesignReader", "InstalledAppsSensor", "ScanContext",
           "SearchRoot", "WatchDir"]
