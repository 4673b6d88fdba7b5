"""What one installed-apps scan knows and collects, handed to each OS backend.

The types the sensor (agent.sensors.installed, which chooses a backend) and the
backends (installed_linux/_macos/_windows) share live here, so the backends import
them and the chooser imports the backends, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.sensors import safe_read
from agent.sensors.homes import MachineRoot, UserHome
from agent.sensors.safe_read import Entry
from policies.observations import InstalledObservation

# Reads `codesign -dv` output for an app bundle (None when codesign is unavailable).
CodesignReader = Callable[[Path], str | None]

# A folder with more entries than this is listed only this far, and the scan says so.
MAX_ENTRIES_PER_DIR = 10000


@dataclass(frozen=True)
class SearchRoot:
    """A folder searched for unpacked apps, to `depth` levels below it."""

    path: Path
    depth: int
    user: str | None
    # Archives are unpacked here by hand, into folders of any depth.
    watch_recursively: bool = False


@dataclass(frozen=True)
class WatchDir:
    path: Path
    recursive: bool = False


@dataclass
class ScanContext:
    """What one scan knows and collects; handed to the OS backend."""

    machine: MachineRoot
    homes: list[UserHome]
    marker_files: frozenset[str]
    marker_globs: Sequence[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def caseless(self) -> bool:
        return self.machine.os_name == "windows"

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def anchor(self, path: Path) -> Path:
        """Where a path belongs: the home it is in, else the machine root.

        Reads and listings never follow a link out of it, so a link in a home
        cannot make the agent read or walk what is outside that home.
        """
        inside = [home.path for home in self.homes if path.is_relative_to(home.path)]
        return max(inside, key=lambda home: len(home.parts), default=self.machine.root)

    def entries(self, path: Path) -> list[Entry]:
        """The entries of a folder; none when it is absent, a warning when unreadable."""
        try:
            return safe_read.list_dir(path, MAX_ENTRIES_PER_DIR, beneath=self.anchor(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            self.warn(self.machine.unreadable(path, error))
            return []

    def subdirs(self, path: Path) -> list[Entry]:
        return [entry for entry in self.entries(path) if entry.is_dir]

    def is_dir(self, path: Path) -> bool:
        """Whether a folder is there; a warning when a link there leads out of its anchor."""
        try:
            safe_read.check_dir(path, beneath=self.anchor(path))
        except safe_read.UnsafePath as error:
            self.warn(self.machine.unreadable(path, error))
            return False
        except OSError:
            return False
        return True

    def read_bytes(self, path: Path, limit: int) -> bytes | None:
        """At most `limit` bytes of a regular file; None when absent, a warning when refused."""
        try:
            return safe_read.read_file(path, limit, beneath=self.anchor(path))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as error:
            self.warn(self.machine.unreadable(path, error))
            return None

    def folder(self, path: Path, user: str | None) -> InstalledObservation:
        """A folder observation, with the marker files found directly inside it."""
        logical = self.machine.logical(path)
        return InstalledObservation(source="folder", id=logical, path=logical, user=user,
                                    contents=self.markers_in(self.entries(path)))

    def markers_in(self, entries: Sequence[Entry]) -> frozenset[str]:
        if not self.caseless:
            return frozenset(entry.name for entry in entries if entry.name in self.marker_files)
        # Windows file names are case-insensitive: report the catalog's spelling.
        wanted = {name.casefold(): name for name in self.marker_files}
        return frozenset(wanted[entry.name.casefold()] for entry in entries
                         if entry.name.casefold() in wanted)
