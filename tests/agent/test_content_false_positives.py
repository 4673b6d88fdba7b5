"""The false-positive budget: every content signature over every executable on this machine.

Zero matches outside the apps they name. The only file allowed to match is the
one the Debian package database says is Telegram Desktop; Signal's signatures
must never match it. /usr/lib (4 GB here) is the slow part and runs with
`-m slow` (CI runs it); the rest runs every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sensors.content import ContentIdentifier, ReadBudget
from agent.sensors.executable_meta import pe_metadata
from policies.compiler import compact_app
from policies.content_match import ContentMatcher
from policies.loader import load_catalog

REPO = Path(__file__).resolve().parents[2]
# Programs, interpreters, the test suite's own files: every run.
FAST_PLACES = ("/usr/bin", "/usr/sbin", "/usr/libexec", "/usr/local/bin",
               f"{sys.base_prefix}/bin", f"{sys.prefix}/bin", str(REPO / "tests"))
# Libraries (Chromium's, Qt's...), the interpreters' and the venv's modules: `-m slow`.
SLOW_PLACES = ("/usr/lib", "/usr/lib64", "/opt", "/usr/local", sys.base_prefix, sys.prefix)


def _owner(path: str) -> str | None:
    """The package dpkg says installed `path` (None when none)."""
    done = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=False)
    return done.stdout.split(":", 1)[0] if done.returncode == 0 else None


def _files(places: tuple[str, ...], shard: int = 0, shards: int = 1) -> Iterator[Path]:
    """Every regular file once (hard links once within a shard), of those whose inode
    falls in `shard`.

    The shard is picked from the directory entry's inode number, which readdir gives
    for nothing: each worker walks the whole tree (4 GB, some 130,000 files) but looks
    closer only at its own quarter, instead of a stat and a path object for every file.
    (Where readdir's number is not the file's, as on overlayfs without xino, a hard link
    may land in two shards: scanned twice, never skipped.) A folder that cannot be read,
    or stops being readable half-way, is passed over, as os.walk does."""
    seen: set[tuple[int, int]] = set()
    pending = list(places)
    while pending:
        for entry in _entries(pending.pop()):
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                if entry.inode() % shards != shard or not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                yield Path(entry.path)


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _every_signature() -> ContentMatcher:
    """Every signature of every app in the catalog, whatever OS it is for."""
    apps = {app_id: compact_app(app) for app_id, app in load_catalog().items()}
    for app in apps.values():
        for signature in app.get("signatures", {}).get("content", []):
            signature.pop("os", None)
    return ContentMatcher(apps, "linux")


def _scan(places: tuple[str, ...], shard: int = 0,
          shards: int = 1) -> tuple[dict[str, tuple[str, ...]], int]:
    matcher = _every_signature()
    # Nothing is paced or capped here: every byte of every program is searched (a
    # program stops being read only once a signature matched it).
    content = ContentIdentifier(matcher, budget=ReadBudget(rate=1e12, burst=1e12),
                                max_file_bytes=1 << 40)
    matched: dict[str, tuple[str, ...]] = {}
    for path in _files(places, shard, shards):
        try:
            refs = content.identify_file(path, beneath=Path("/"))
        except OSError:
            continue
        if path.suffix.lower() in (".exe", ".dll"):
            fields, signer = pe_metadata(path.read_bytes())
            refs += matcher.match_pe(fields, signer)
        if refs:
            matched[str(path)] = refs
    return matched, content.stats.files_read


def _check(matched: dict[str, tuple[str, ...]]) -> None:
    for path, refs in matched.items():
        apps = {ref.split("/", 1)[0] for ref in refs}
        owner = _owner(os.path.realpath(path))
        assert owner == "telegram-desktop" and apps == {"telegram"}, (
            f"{path} (package {owner}) matched {refs}: a false positive")


def test_no_signature_matches_a_program_it_does_not_name() -> None:
    matched, files = _scan(FAST_PLACES)
    assert files > 300  # the scan really ran over this machine's programs
    _check(matched)
    if Path("/usr/bin/telegram-desktop").is_file():
        # The real one is found, by Telegram's signatures only (never Signal's).
        assert set(matched["/usr/bin/telegram-desktop"]) <= {
            "telegram/tdesktop-theme-format", "telegram/tdesktop-app-identity"}


# The libraries are 4 GB: a quarter of the files (by inode) per test, so the pytest-xdist
# workers share the scan instead of one of them carrying it all.
SHARDS = 4


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_signature_matches_a_library_or_shared_file(shard: int) -> None:
    matched, files = _scan(SLOW_PLACES, shard, SHARDS)
    assert files > 1000 // SHARDS  # every quarter of the scan really ran
    _check(matched)
