"""Installed apps on macOS: .app bundles and Homebrew casks.

A bundle is known by its Info.plist (bundle id, name, version) and, where the
`codesign` tool exists, by its signing TeamID, which tells two apps that share
a name apart (tdesktop's and the Swift client's Telegram.app). codesign is
slow, so its answer is kept until the bundle's Info.plist changes.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from agent.sensors.safe_read import Entry
from agent.sensors.scan_context import CodesignReader, ScanContext, SearchRoot, WatchDir
from policies.observations import InstalledObservation

_CASKROOMS = ("opt/homebrew/Caskroom", "usr/local/Caskroom")
_CODESIGN_TIMEOUT = 30.0
# Real Info.plists are a few kilobytes; a bigger one is refused with a warning.
_INFO_PLIST_BYTES = 4 * 1024 * 1024
_TEAM_ID = re.compile(r"^TeamIdentifier=(\S+)\s*$", re.MULTILINE)

StatKey = tuple[int, int, int]


def run_codesign(app: Path) -> str | None:
    """`codesign -dv` output for a bundle, or None where there is no codesign."""
    tool = shutil.which("codesign")
    if tool is None:
        return None
    done = subprocess.run([tool, "-dv", "--verbose=2", str(app)], capture_output=True,
                          text=True, errors="replace", timeout=_CODESIGN_TIMEOUT, check=False)
    # codesign writes its description to stderr.
    return done.stderr + done.stdout


def parse_team_id(output: str) -> str | None:
    match = _TEAM_ID.search(output)
    if match is None or match.group(1) == "not":  # "TeamIdentifier=not set": ad-hoc signed
        return None
    return match.group(1)


class MacBackend:
    def __init__(self, codesign: CodesignReader | None = None) -> None:
        self._codesign = codesign or run_codesign
        self._teams: dict[tuple[Path, StatKey], str | None] = {}

    def scan(self, ctx: ScanContext) -> list[InstalledObservation]:
        found = []
        for folder, user in self._app_folders(ctx):
            for app in _bundles_in(ctx, folder):
                observation = self._bundle(ctx, app, user)
                if observation is not None:
                    found.append(observation)
        return found + _casks(ctx)

    def search_roots(self, ctx: ScanContext) -> list[SearchRoot]:
        roots = []
        for home in ctx.homes:
            roots += [SearchRoot(home.path / "Downloads", 3, home.user, watch_recursively=True),
                      SearchRoot(home.path / "Desktop", 3, home.user, watch_recursively=True),
                      SearchRoot(home.path, 3, home.user)]
        return roots

    def watch_dirs(self, ctx: ScanContext) -> list[WatchDir]:
        # Flat: a new bundle appears as a new folder, and the watcher follows new
        # folders until their copy settles. A recursive watch would cover every file
        # of every installed app.
        folders = [folder for folder, _ in self._app_folders(ctx)]
        return [WatchDir(path) for path in
                (*folders, *(ctx.machine.root / name for name in _CASKROOMS))]

    def _app_folders(self, ctx: ScanContext) -> list[tuple[Path, str | None]]:
        """/Applications and ~/Applications, each with one level of subfolders."""
        tops: list[tuple[Path, str | None]] = [(ctx.machine.root / "Applications", None)]
        tops += [(home.path / "Applications", home.user) for home in ctx.homes]
        folders = []
        for top, user in tops:
            folders.append((top, user))
            folders += [(Path(entry.path), user) for entry in ctx.subdirs(top)
                        if not entry.name.endswith(".app") and not entry.name.startswith(".")]
        return folders

    def _bundle(self, ctx: ScanContext, app: Path, user: str | None) -> InstalledObservation | None:
        plist_path = app / "Contents/Info.plist"
        data = ctx.read_bytes(plist_path, _INFO_PLIST_BYTES)
        if data is None:
            return None  # a half-copied bundle: the watcher will call again when it lands
        logical = ctx.machine.logical(app)
        try:
            info: Any = plistlib.loads(data)
        except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError) as error:
            ctx.warn(f"could not parse {logical}/Contents/Info.plist: {error}")
            return None
        bundle_id = info.get("CFBundleIdentifier") if isinstance(info, dict) else None
        if not isinstance(bundle_id, str) or not bundle_id:
            ctx.warn(f"{logical} has no CFBundleIdentifier in its Info.plist")
            return None
        return InstalledObservation(
            source="app_bundle", id=bundle_id, path=logical, user=user,
            version=_text(info, "CFBundleShortVersionString") or _text(info, "CFBundleVersion"),
            display_name=(_text(info, "CFBundleDisplayName") or _text(info, "CFBundleName")
                          or app.stem),
            team_id=self._team_id(ctx, app, plist_path))

    def _team_id(self, ctx: ScanContext, app: Path, plist_path: Path) -> str | None:
        try:
            info = plist_path.stat()
        except OSError:
            return None
        key = (app, (info.st_ino, info.st_mtime_ns, info.st_size))
        if key not in self._teams:
            try:
                output = self._codesign(app)
            except (OSError, subprocess.SubprocessError) as error:
                ctx.warn(f"could not check the signature of {ctx.machine.logical(app)}: {error}")
                return None
            self._teams[key] = parse_team_id(output) if output else None
        return self._teams[key]


def _bundles_in(ctx: ScanContext, folder: Path) -> list[Path]:
    return [Path(entry.path) for entry in ctx.subdirs(folder) if entry.name.endswith(".app")]


def _text(info: dict[str, Any], key: str) -> str | None:
    value = info.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _casks(ctx: ScanContext) -> list[InstalledObservation]:
    found = []
    for caskroom in _CASKROOMS:
        for cask in ctx.subdirs(ctx.machine.root / caskroom):
            if cask.name.startswith("."):
                continue
            versions = [entry for entry in ctx.subdirs(Path(cask.path))
                        if not entry.name.startswith(".")]
            # Several versions can linger after upgrades; the newest folder is the live one.
            newest = max(versions, key=_mtime, default=None)
            found.append(InstalledObservation(
                source="homebrew", id=cask.name, path=ctx.machine.logical(Path(cask.path)),
                version=newest.name if newest else None))
    return found


def _mtime(entry: Entry) -> float:
    try:
        return os.stat(entry.path, follow_symlinks=False).st_mtime
    except OSError:
        return 0.0
