"""Installed apps on Linux: dpkg, rpm, snaps, flatpaks and .desktop files.

Package databases are parsed again only when they change (their stat key),
so a rescan triggered by an unrelated file costs a few stat calls there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from agent.sensors.scan_context import ScanContext, SearchRoot, WatchDir
from policies.observations import InstalledObservation

# dpkg states in which the package's files are on disk. "config-files" (removed,
# configuration kept) and "not-installed" are not an install.
_DPKG_PRESENT = {"installed", "unpacked", "half-configured", "triggers-awaited",
                 "triggers-pending"}
_RPM_DB_DIRS = ("var/lib/rpm", "usr/lib/sysimage/rpm")
_RPM_TIMEOUT = 120.0
_SYSTEM_DESKTOP_DIRS = ("usr/share/applications", "usr/local/share/applications",
                        "etc/xdg/autostart")
_USER_DESKTOP_DIRS = (".local/share/applications", ".config/autostart")
_SNAP_DESKTOP_DIR = "var/lib/snapd/desktop/applications"
_SYSTEM_FLATPAK = "var/lib/flatpak"
_USER_FLATPAK = ".local/share/flatpak"
_FLATPAK_EXPORTS = "exports/share/applications"
# /snap/bin holds the command wrappers of every snap, not a snap.
_NOT_SNAPS = {"bin", "README"}
# Caps on what one file may cost to read; a bigger one is refused with a warning.
_DPKG_STATUS_BYTES = 64 * 1024 * 1024
_SNAP_YAML_BYTES = 1024 * 1024
_METAINFO_BYTES = 4 * 1024 * 1024
_RELEASE_VERSION = re.compile(rb"<release\b[^>]*\bversion=\"([^\"]+)\"")

StatKey = tuple[int, int, int]


class LinuxBackend:
    def __init__(self) -> None:
        self._dpkg_cache: tuple[StatKey, list[InstalledObservation]] | None = None
        self._rpm_cache: tuple[tuple[StatKey, ...], list[InstalledObservation]] | None = None

    def scan(self, ctx: ScanContext) -> list[InstalledObservation]:
        return [*self._dpkg(ctx), *self._rpm(ctx), *_snaps(ctx), *_flatpaks(ctx),
                *_desktop_files(ctx)]

    def search_roots(self, ctx: ScanContext) -> list[SearchRoot]:
        roots = []
        for home in ctx.homes:
            roots += [SearchRoot(home.path / "Downloads", 3, home.user, watch_recursively=True),
                      SearchRoot(home.path / "Desktop", 3, home.user, watch_recursively=True),
                      SearchRoot(home.path, 3, home.user)]
        root = ctx.machine.root
        return [*roots, SearchRoot(root / "opt", 2, None), SearchRoot(root / "usr/local", 2, None)]

    def watch_dirs(self, ctx: ScanContext) -> list[WatchDir]:
        root = ctx.machine.root
        # dpkg replaces its status file by a rename, which the folder watch sees.
        # The rpm database is rewritten in place (and touched by our own reads),
        # so rpm installs are seen by the .desktop files they drop, and by rescans.
        system = [root / "var/lib/dpkg", root / "snap", root / "var/lib/snapd/snaps",
                  root / _SNAP_DESKTOP_DIR, root / _SYSTEM_FLATPAK / "app",
                  root / _SYSTEM_FLATPAK / _FLATPAK_EXPORTS,
                  *(root / name for name in _SYSTEM_DESKTOP_DIRS)]
        users = [path for home in ctx.homes for path in (
            *(home.path / name for name in _USER_DESKTOP_DIRS),
            home.path / _USER_FLATPAK / "app", home.path / _USER_FLATPAK / _FLATPAK_EXPORTS)]
        return [WatchDir(path) for path in (*system, *users)]

    # -- package databases ------------------------------------------------------

    def _dpkg(self, ctx: ScanContext) -> list[InstalledObservation]:
        status = ctx.machine.root / "var/lib/dpkg/status"
        key = _stat_key(status)
        if key is None:
            return []
        if self._dpkg_cache and self._dpkg_cache[0] == key:
            return self._dpkg_cache[1]
        data = ctx.read_bytes(status, _DPKG_STATUS_BYTES)
        if data is None:
            return []
        packages = parse_dpkg_status(data.decode("utf-8", errors="replace"))
        self._dpkg_cache = (key, packages)
        return packages

    def _rpm(self, ctx: ScanContext) -> list[InstalledObservation]:
        root = ctx.machine.root
        databases = [root / name for name in _RPM_DB_DIRS if os.path.isdir(root / name)]
        rpm = shutil.which("rpm")
        if not databases or rpm is None:
            return []  # not an rpm system, or nothing to read it with
        key = tuple(filter(None, (_stat_key(Path(entry.path)) for database in databases
                                  for entry in ctx.entries(database))))
        if self._rpm_cache and self._rpm_cache[0] == key:
            return self._rpm_cache[1]
        command = [rpm, "-qa", "--root", str(root), "--qf", r"%{NAME}\t%{VERSION}\n"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                  timeout=_RPM_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            ctx.warn(f"could not list rpm packages: {error}")
            return []
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
            ctx.warn(f"could not list rpm packages: {reason}")
            return []
        packages = []
        for line in done.stdout.splitlines():
            name, _, version = line.partition("\t")
            if name.strip() and not name.startswith("gpg-pubkey"):
                packages.append(InstalledObservation(source="rpm", id=name.strip(),
                                                     version=version.strip() or None))
        self._rpm_cache = (key, packages)
        return packages


def parse_dpkg_status(text: str) -> list[InstalledObservation]:
    """Packages whose files are on disk, from a dpkg status database."""
    packages: dict[str, InstalledObservation] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # continuation of a multi-line field (Description, Conffiles)
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        package = fields.get("package")
        state = fields.get("status", "").split()
        if package and len(state) == 3 and state[2] in _DPKG_PRESENT:
            # A multi-arch package appears once per architecture; one install is enough.
            packages.setdefault(package, InstalledObservation(
                source="deb", id=package, version=fields.get("version") or None))
    return list(packages.values())


def _stat_key(path: Path) -> StatKey | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _snaps(ctx: ScanContext) -> list[InstalledObservation]:
    root = ctx.machine.root
    versions: dict[str, str | None] = {}
    for entry in ctx.subdirs(root / "snap"):
        if entry.name not in _NOT_SNAPS:
            versions[entry.name] = _snap_version(ctx, Path(entry.path))
    # The .snap files are the install even where /snap is not mounted (a disk image).
    for entry in ctx.entries(root / "var/lib/snapd/snaps"):
        name, _, revision = entry.name.removesuffix(".snap").rpartition("_")
        if entry.name.endswith(".snap") and name:
            versions.setdefault(name, revision or None)
    for entry in ctx.entries(root / _SNAP_DESKTOP_DIR):
        # snapd names them <snap>_<app>.desktop.
        name = entry.name.partition("_")[0]
        if entry.name.endswith(".desktop") and name:
            versions.setdefault(name, None)
    return [InstalledObservation(source="snap", id=name, path=f"/snap/{name}", version=version)
            for name, version in sorted(versions.items())]


def _snap_version(ctx: ScanContext, snap: Path) -> str | None:
    meta = ctx.read_bytes(snap / "current/meta/snap.yaml", _SNAP_YAML_BYTES)
    if meta:
        match = re.search(rb"^version:\s*['\"]?([^'\"\n]+)", meta, re.MULTILINE)
        if match:
            return match.group(1).decode("utf-8", errors="replace").strip()
    try:
        return os.readlink(snap / "current")  # the revision, e.g. "1234"
    except OSError:
        return None


def _flatpaks(ctx: ScanContext) -> list[InstalledObservation]:
    installs: list[tuple[Path, str | None]] = [(ctx.machine.root / _SYSTEM_FLATPAK, None)]
    installs += [(home.path / _USER_FLATPAK, home.user) for home in ctx.homes]
    found = []
    for base, user in installs:
        for entry in ctx.subdirs(base / "app"):
            app = Path(entry.path)
            found.append(InstalledObservation(
                source="flatpak", id=entry.name, path=ctx.machine.logical(app),
                version=_flatpak_version(ctx, app), user=user))
    return found


def _flatpak_version(ctx: ScanContext, app: Path) -> str | None:
    # <id>/current -> <arch>/<branch>; the deployed files may carry release notes.
    try:
        branch = os.readlink(app / "current").rstrip("/").rpartition("/")[2]
    except OSError:
        return None
    metainfo = app / "current/active/files/share/metainfo" / f"{app.name}.metainfo.xml"
    data = ctx.read_bytes(metainfo, _METAINFO_BYTES)
    match = _RELEASE_VERSION.search(data) if data else None
    return match.group(1).decode("utf-8", errors="replace") if match else branch


def _desktop_files(ctx: ScanContext) -> list[InstalledObservation]:
    root = ctx.machine.root
    places: list[tuple[Path, str | None]] = [(root / name, None) for name in _SYSTEM_DESKTOP_DIRS]
    places += [(root / _SNAP_DESKTOP_DIR, None),
               (root / _SYSTEM_FLATPAK / _FLATPAK_EXPORTS, None)]
    for home in ctx.homes:
        places += [(home.path / name, home.user) for name in _USER_DESKTOP_DIRS]
        places.append((home.path / _USER_FLATPAK / _FLATPAK_EXPORTS, home.user))
    found = []
    for folder, user in places:
        for entry in ctx.entries(folder):
            if entry.name.endswith(".desktop") and not entry.is_dir:
                found.append(InstalledObservation(
                    source="desktop", id=entry.name,
                    path=ctx.machine.logical(Path(entry.path)), user=user))
    return found
