"""Watching install locations, so an install or removal is seen within a second.

The watcher does not know what an install looks like; it only says "something
appeared, vanished or moved where apps live" by calling `on_change`, once per
burst (debounced), from one worker thread. The caller rescans.

Most locations are watched flat: a recursive watch on /snap, /Applications or
a flatpak tree would cover every file of every app. A new folder appearing in
a flat-watched location is followed for a while, two levels deep, so an app
that is still being copied or unpacked (Telegram.app/Contents/Info.plist, a
tarball's Telegram/Updater) is seen when its files land, not only when its
folder was made. Folders where people unpack archives by hand (Downloads) are
passed as `recursive`.

Those folders belong to users, so they are hostile ground. A watch root that
is a link is not watched (~/Downloads -> / would put a watch on every folder
of the disk), and a recursive watch covers at most `max_tree_folders` folders
(one inotify watch each, taken from a per-user kernel budget): a bigger tree,
or one that grows past the cap, is watched flat instead, with a warning, and
what lands deeper is seen by the periodic rescan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from agent.sensors import safe_read

log = logging.getLogger(__name__)

# Content changes (a growing download, a log being written) say nothing about
# what is installed; only names appearing, vanishing or moving do.
EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, DirCreatedEvent, FileDeletedEvent,
                                       DirDeletedEvent, FileMovedEvent, DirMovedEvent]
FOLLOW_DEPTH = 2
# A followed folder is dropped after this long without an event in it.
FOLLOW_SECONDS = 30.0
MAX_FOLLOWED = 32
# Folders one recursive watch may cover (each costs an inotify watch).
MAX_TREE_FOLDERS = 2000


@dataclass
class _Watch:
    handle: ObservedWatch
    followed: bool
    expires: float = 0.0
    recursive: bool = False


class InstallWatcher:
    """Calls `on_change` (debounced, from one worker thread) when something changes in `paths`."""

    def __init__(
        self,
        paths: Sequence[Path],
        on_change: Callable[[], None],
        debounce_seconds: float = 0.2,
        recursive: Collection[Path] = (),
        max_tree_folders: int = MAX_TREE_FOLDERS,
    ) -> None:
        self._max_tree_folders = max_tree_folders
        self._paths = list(dict.fromkeys(paths))
        self._recursive = set(recursive)
        self._on_change = on_change
        self._debounce = debounce_seconds
        # Under a steady stream of events still rescan now and then.
        self._max_delay = max(1.0, 10 * debounce_seconds)
        self.warnings: list[str] = []
        self._cond = threading.Condition()
        self._burst_start: float | None = None
        self._due: float | None = None
        self._to_follow: list[tuple[Path, int]] = []
        # Recursive watches in which folders appeared: counted again against the cap.
        self._to_count: set[Path] = set()
        self._watches: dict[Path, _Watch] = {}
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        if self._worker is not None:
            return
        self._stopping = False
        self._due = self._burst_start = None
        self._to_follow = []
        self._to_count = set()
        self._observer = Observer()
        # Started before scheduling, so one bad path cannot stop the others.
        self._observer.start()
        for path in self._paths:
            self._watch(path)
        self._worker = threading.Thread(target=self._run, name="warden-install-watch",
                                        daemon=True)
        self._worker.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join()
        self._observer = self._worker = None
        self._watches.clear()

    def update(self, paths: Sequence[Path], recursive: Collection[Path] = ()) -> None:
        """Watch a new set of paths (e.g. after a rescan found a new install location)."""
        wanted = list(dict.fromkeys(paths))
        recursive = set(recursive)
        with self._cond:
            changed = [path for path in self._paths
                       if path not in wanted or (path in recursive) != (path in self._recursive)]
            self._paths, self._recursive = wanted, recursive
        if self._observer is None:
            return
        for path in changed:
            self._unwatch(path)
        for path in wanted:
            watch = self._watches.get(path)
            if watch is not None and watch.followed:
                self._unwatch(path)  # followed for a while; now watched for good
            if watch is None or watch.followed:
                self._watch(path)

    def watching(self) -> list[Path]:
        """The folders watched now: the given paths plus new folders being followed."""
        with self._cond:
            return list(self._watches)

    # -- watches ----------------------------------------------------------------

    def _watch(self, path: Path) -> None:
        if os.path.islink(path):
            self._warn(f"not watching {path}: it is a link, and links are not followed")
            return
        recursive = path in self._recursive and self._fits(path)
        handler = _Handler(self, path, 0 if recursive else FOLLOW_DEPTH)
        handle = self._schedule(handler, path, recursive)
        if handle is None:
            return
        with self._cond:
            self._watches[path] = _Watch(handle, followed=False, recursive=recursive)

    def _fits(self, path: Path) -> bool:
        """Whether a recursive watch on `path` stays within the cap; a warning when not."""
        if _count_folders(path, self._max_tree_folders) <= self._max_tree_folders:
            return True
        self._warn(f"{path} holds more than {self._max_tree_folders} folders: watched without "
                   "its subfolders (the cap on watches per folder tree); an install deeper "
                   "inside is seen by the periodic rescan")
        return False

    def _recount(self, path: Path) -> None:
        with self._cond:
            watch = self._watches.get(path)
        if watch is None or not watch.recursive or self._fits(path):
            return
        self._unwatch(path)
        handle = self._schedule(_Handler(self, path, FOLLOW_DEPTH), path, False)
        if handle is not None:
            with self._cond:
                self._watches[path] = _Watch(handle, followed=False)

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            log.warning("%s", text)
            self.warnings.append(text)

    def _follow(self, path: Path, depth: int) -> None:
        with self._cond:
            if path in self._watches:
                return
            followed = sorted((watch.expires, key) for key, watch in self._watches.items()
                              if watch.followed)
        if len(followed) >= MAX_FOLLOWED:
            self._unwatch(followed[0][1])
        handle = self._schedule(_Handler(self, path, depth), path, False, quiet=True)
        if handle is not None:
            with self._cond:
                self._watches[path] = _Watch(handle, True, time.monotonic() + FOLLOW_SECONDS)

    def _schedule(self, handler: _Handler, path: Path, recursive: bool, quiet: bool = False
                  ) -> ObservedWatch | None:
        assert self._observer is not None
        try:
            return self._observer.schedule(handler, str(path), recursive=recursive,
                                           event_filter=EVENTS)
        except OSError as error:
            # A followed folder may be gone already; that is not worth a warning.
            if not quiet:
                self._warn(f"could not watch {path}: {error.strerror or error}")
            return None

    def _unwatch(self, path: Path) -> None:
        with self._cond:
            watch = self._watches.pop(path, None)
        if watch is not None and self._observer is not None:
            # KeyError: the observer already dropped it (it is stopping).
            with contextlib.suppress(KeyError):
                self._observer.unschedule(watch.handle)

    # -- events -----------------------------------------------------------------

    def _event(self, event: FileSystemEvent, source: Path, follow_depth: int) -> None:
        now = time.monotonic()
        with self._cond:
            if self._stopping:
                return
            if self._burst_start is None:
                self._burst_start = now
            self._due = min(now + self._debounce, self._burst_start + self._max_delay)
            watch = self._watches.get(source)
            if watch is not None and watch.followed:
                watch.expires = now + FOLLOW_SECONDS
            if watch is not None and watch.recursive and event.is_directory and (
                    event.event_type in ("created", "moved")):
                self._to_count.add(source)
            if follow_depth > 0 and event.is_directory and event.event_type in ("created",
                                                                                 "moved"):
                target = event.dest_path if event.event_type == "moved" else event.src_path
                self._to_follow.append((Path(os.fsdecode(target)), follow_depth - 1))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                fire, follow, expired = self._wait()
                if self._stopping:
                    return
                recount, self._to_count = self._to_count, set()
            for path in recount:
                self._recount(path)
            for path, depth in follow:
                self._follow(path, depth)
            for path in expired:
                self._unwatch(path)
            if fire:
                try:
                    self._on_change()
                except Exception:
                    # One failed rescan must not end the watching.
                    log.exception("install rescan failed")

    def _wait(self) -> tuple[bool, list[tuple[Path, int]], list[Path]]:
        """Sleep (holding the condition) until there is work; return it."""
        while not self._stopping:
            now = time.monotonic()
            expiries = [watch.expires for watch in self._watches.values() if watch.followed]
            expired = [path for path, watch in self._watches.items()
                       if watch.followed and watch.expires <= now]
            fire = self._due is not None and self._due <= now
            if self._to_follow or expired or fire:
                follow, self._to_follow = self._to_follow, []
                if fire:
                    self._due = self._burst_start = None
                return fire, follow, expired
            deadlines = [d for d in (self._due, *expiries) if d is not None]
            self._cond.wait(min(deadlines) - now if deadlines else None)
        return False, [], []


def _count_folders(root: Path, limit: int) -> int:
    """Folders under `root` (itself included), links not followed; counting stops past `limit`."""
    found = 1
    pending = [root]
    while pending and found <= limit:
        try:
            entries = safe_read.list_dir(pending.pop(), limit + 1)
        except OSError:
            continue  # gone or unreadable: watchdog cannot watch inside it either
        subfolders = [Path(entry.path) for entry in entries if entry.is_dir]
        found += len(subfolders)
        pending += subfolders
    return found


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: InstallWatcher, source: Path, follow_depth: int) -> None:
        self._watcher = watcher
        self._source = source
        self._follow_depth = follow_depth

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "deleted", "moved"):
            self._watcher._event(event, self._source, self._follow_depth)
