"""Where portable apps lie at rest, and which of the files there a content signature names.

Users keep programs no package manager knows about in a few places: what they
downloaded (and unpacked), their desktop, `~/bin`, `~/Applications`, the top
of their home, and `/opt`. Each is walked a few levels deep, without entering
links or hidden folders, within a bound on folders and files; every file is
handed to the content identifier (agent/sensors/content.py), which reads it
once per (device, inode, mtime, size) and stops after the first bytes of what
is not an executable. A file a signature names becomes an
`InstalledObservation` of source `file`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.sensors.content import ContentIdentifier
from agent.sensors.scan_context import ScanContext
from policies.observations import InstalledObservation

# (folder in each home, levels below it): an unpacked tarball is one level down
# (Downloads/Telegram/Telegram), a macOS bundle three (X.app/Contents/MacOS/X).
HOME_PLACES: tuple[tuple[str, int], ...] = (
    ("", 0), ("Downloads", 3), ("Desktop", 3), ("bin", 1), (".local/bin", 1),
    ("Applications", 4),
)
MACHINE_PLACES: tuple[tuple[str, int], ...] = (("opt", 3), ("Applications", 4))
MAX_FILES_PER_PLACE = 4000
MAX_DIRS_PER_PLACE = 2000
# Trees that are big and never hold a portable app.
_SKIP = frozenset({"node_modules", "__pycache__", "site-packages", "dist-packages", ".git"})


@dataclass(frozen=True)
class Place:
    path: Path
    depth: int
    user: str | None


def places(ctx: ScanContext) -> list[Place]:
    found = [Place(home.path / name if name else home.path, depth, home.user)
             for home in ctx.homes for name, depth in HOME_PLACES]
    found += [Place(ctx.machine.root / name, depth, None) for name, depth in MACHINE_PLACES]
    return [place for place in found if ctx.is_dir(place.path)]


def identified_files(ctx: ScanContext, content: ContentIdentifier) -> list[InstalledObservation]:
    """Files in the portable-app places that match a content signature."""
    found: dict[str, InstalledObservation] = {}
    for place in places(ctx):
        for path in _files(ctx, place):
            try:
                refs = content.identify_file(path, beneath=ctx.anchor(path),
                                             logical=ctx.machine.logical(path))
            except OSError as error:
                ctx.warn(ctx.machine.unreadable(path, error))
                continue
            if refs:
                logical = ctx.machine.logical(path)
                found.setdefault(logical, InstalledObservation(
                    source="file", id=logical, path=logical, user=place.user, content=refs))
    return list(found.values())


def _files(ctx: ScanContext, place: Place) -> Iterator[Path]:
    queue = deque([(place.path, 0)])
    folders = files = 0
    while queue:
        folder, level = queue.popleft()
        folders += 1
        if folders > MAX_DIRS_PER_PLACE:
            ctx.warn(f"stopped looking at files under {ctx.machine.logical(place.path)} "
                     f"after {MAX_DIRS_PER_PLACE} folders")
            return
        for entry in ctx.entries(folder):
            if entry.kind == "file":
                files += 1
                if files > MAX_FILES_PER_PLACE:
                    ctx.warn(f"stopped looking at files under {ctx.machine.logical(place.path)}"
                             f" after {MAX_FILES_PER_PLACE} files")
                    return
                yield Path(entry.path)
            elif (entry.is_dir and level < place.depth and not entry.name.startswith(".")
                  and entry.name not in _SKIP):
                queue.append((Path(entry.path), level + 1))
