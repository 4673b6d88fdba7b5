"""Every hostile kind of file, planted at every place the agent reads or lists.

The places are not listed by hand: `read_sites()` finds, in the agent's code,
every call of agent.sensors.safe_read (and of the ScanContext methods that
wrap it). `SITES` says where each one reads in a machine tree; a new read
site without an entry here fails `test_every_read_site_is_planted`, so it is
covered by construction. A second guard fails when sensor code opens or lists
anything without the helper.

Each plant (tests/agent/hostile_support.py: FIFO, socket, links to /dev/zero,
to / and in a loop, a 2 GiB file, a file that keeps vanishing, an unreadable
file) must end with no exception within a deadline; a hang fails the test
instead of stalling the suite. Unreadable plants are read as `nobody`: root
reads everything.
"""

from __future__ import annotations

import ast
import functools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.scanning.native_watch import NativeBlockSensor
from agent.sensors.content import ContentIdentifier
from agent.sensors.install_watch import InstallWatcher
from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.native_log import native_sources
from agent.sensors.package_vouch import DpkgVouch
from agent.sensors.processes import ExeHasher
from policies.compiler import compact_app, compile_bundle
from policies.content_match import ContentMatcher
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy
from tests.agent.hostile_support import KINDS, planted
from tests.unprivileged import fork_as

AGENT = Path(__file__).resolve().parents[2] / "agent"
DEADLINE = 20.0
MARKERS = frozenset({"Telegram", "Updater", "tdata"})
# The stock globs have no wildcard; these reach every branch of the glob expansion.
GLOBS = ("~/.local/share/TelegramDesktop", "~/apps/*/Telegram", "~/deep/**/tdata")
SAFE_READ = {"read_file", "open_file", "list_dir", "is_dir", "check_dir"}
WRAPPER_METHODS = {"read_bytes", "entries", "subdirs", "is_dir"}


@dataclass(frozen=True)
class Site:
    probe: str  # what runs the site: "scan:linux", "scan:macos", "watch" or "hash"
    targets: tuple[str, ...]  # where it reads, relative to the machine root
    # A link to / at a target is refused with a warning naming it (proof the site ran),
    # except where the listing above sees a link and does not enter it, or the site
    # has no warnings to give.
    quiet: tuple[str, ...] = ()


HOME = "home/alice"
MAC_HOME = "Users/alice"
ALL = ("*",)
FLATPAK = f"{HOME}/.local/share/flatpak/app/org.telegram.desktop"
SITES: dict[tuple[str, str], Site] = {
    ("homes", "find_homes"): Site("scan:linux", (HOME,), quiet=ALL),
    ("homes", "_children"): Site("scan:linux", ("home",)),
    ("homes", "_passwd_homes"): Site("scan:linux", ("etc/passwd",), quiet=ALL),
    ("install_watch", "_count_folders"): Site("watch", (f"{HOME}/Downloads/deep",),
                                              quiet=ALL),
    ("installed", "InstalledAppsSensor._watch_dirs"): Site(
        "scan:linux", (f"{HOME}/Downloads", f"{HOME}/.local/share/applications"), quiet=ALL),
    ("scan_context", "ScanContext.folder"): Site("scan:linux",
                                              (f"{HOME}/.local/share/TelegramDesktop",)),
    ("installed", "_expand"): Site("scan:linux", (f"{HOME}/apps", f"{HOME}/deep",
                                                  f"{HOME}/deep/x"), quiet=(f"{HOME}/deep/x",)),
    ("installed", "_search"): Site("scan:linux", (f"{HOME}/Downloads", f"{HOME}/Desktop/tools"),
                                   quiet=(f"{HOME}/Desktop/tools",)),
    ("installed_linux", "LinuxBackend._dpkg"): Site("scan:linux", ("var/lib/dpkg/status",)),
    ("installed_linux", "LinuxBackend._rpm"): Site("scan:linux", ("var/lib/rpm",)),
    ("installed_linux", "_snaps"): Site("scan:linux", (
        "snap", "var/lib/snapd/snaps", "var/lib/snapd/desktop/applications")),
    ("installed_linux", "_snap_version"): Site("scan:linux",
                                               ("snap/telegram-desktop/1234/meta/snap.yaml",)),
    ("installed_linux", "_flatpaks"): Site("scan:linux", (
        f"{HOME}/.local/share/flatpak/app", "var/lib/flatpak/app")),
    ("installed_linux", "_flatpak_version"): Site("scan:linux", (
        f"{FLATPAK}/x86_64/stable/abc/files/share/metainfo/org.telegram.desktop.metainfo.xml",)),
    ("installed_linux", "_desktop_files"): Site("scan:linux", (
        f"{HOME}/.local/share/applications", "usr/share/applications")),
    ("installed_macos", "MacBackend._app_folders"): Site("scan:macos",
                                                         (f"{MAC_HOME}/Applications",)),
    ("installed_macos", "MacBackend._bundle"): Site("scan:macos", (
        f"{MAC_HOME}/Applications/Telegram.app/Contents/Info.plist",)),
    ("installed_macos", "_bundles_in"): Site("scan:macos", (f"{MAC_HOME}/Applications/Tools",),
                                             quiet=ALL),
    ("installed_macos", "_casks"): Site("scan:macos", ("opt/homebrew/Caskroom",
                                                       "opt/homebrew/Caskroom/telegram"),
                                        quiet=("opt/homebrew/Caskroom/telegram",)),
    ("processes", "ExeHasher.digest"): Site("hash", ("proc/4242/exe",), quiet=ALL),
    ("content", "ContentIdentifier.identify_process"): Site("content", ("proc/4242/exe",),
                                                            quiet=ALL),
    # Files in a listing are entered only when the listing says they are regular files.
    ("content", "ContentIdentifier.identify_file"): Site("content", (
        f"{HOME}/Downloads/notes", f"{HOME}/bin/tool", "opt/app/chat"), quiet=ALL),
    ("package_vouch", "DpkgVouch._refresh"): Site("vouch", (
        "var/lib/dpkg/info", "var/lib/dpkg/info/bash.list"), quiet=ALL),
    ("content_places", "places"): Site("content", (f"{HOME}/bin", "opt")),
    ("content_places", "_files"): Site("content", (f"{HOME}/Downloads/unpacked",),
                                       quiet=ALL),
    ("native_log", "LogTail.read_new"): Site("native", ("var/db/santa/santa.log",)),
    # No Santa folder, or a hostile one: no source, and nothing to say.
    ("native_log", "native_sources"): Site("native", ("var/db/santa",), quiet=ALL),
}
# Thin ScanContext methods over safe_read: covered through the sites that call them.
WRAPPERS = {("scan_context", f"ScanContext.{name}") for name in
            ("entries", "subdirs", "is_dir", "read_bytes")}
# Sensor modules allowed to open or list without the helper, and why.
RAW_READS_ALLOWED = {
    "safe_read.py": "the helper itself",
    "procfs.py": "kernel files under /proc/<pid> (stat, status, cmdline), never a user's",
    "procnet.py": "kernel tables under /proc/net and /proc/<pid>/fd",
    "registry.py": "a recorded registry file the operator names",
}
RAW_CALLS = {"open", "scandir", "listdir", "walk", "read_bytes", "read_text", "iterdir",
             "glob", "rglob", "file_digest"}


def _calls(path: Path) -> Iterator[tuple[str, ast.Call]]:
    """(enclosing Class.function, call) for every call in a module."""
    def visit(node: ast.AST, scope: tuple[str, ...]) -> Iterator[tuple[str, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            inner = (*scope, child.name) if isinstance(
                child, ast.FunctionDef | ast.ClassDef) else scope
            if isinstance(child, ast.Call):
                yield ".".join(scope), child
            yield from visit(child, inner)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), ())


def _name(call: ast.Call) -> tuple[str, str]:
    """(what it is called on, name) of a call: ("safe_read", "read_file"), ("", "open")."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return (func.value.id if isinstance(func.value, ast.Name) else "?"), func.attr
    return "", func.id if isinstance(func, ast.Name) else "?"


def _reads(call: ast.Call) -> bool:
    owner, name = _name(call)
    return (owner == "safe_read" and name in SAFE_READ) or (
        owner in ("ctx", "self") and name in WRAPPER_METHODS)


def read_sites() -> set[tuple[str, str]]:
    return {(path.stem, scope) for path in AGENT.rglob("*.py") if path.name != "safe_read.py"
            for scope, call in _calls(path) if _reads(call)}


def test_every_read_site_is_planted() -> None:
    sites = read_sites()
    assert sites - set(SITES) - WRAPPERS == set(), "new read sites: add them to SITES"
    assert set(SITES) | WRAPPERS == sites, "SITES names places that no longer read"


def test_sensors_open_and_list_only_through_safe_read() -> None:
    raw = sorted(f"{path.name}:{call.lineno} ({scope})"
                 for path in (AGENT / "sensors").glob("*.py")
                 if path.name not in RAW_READS_ALLOWED
                 for scope, call in _calls(path)
                 if _name(call)[1] in RAW_CALLS and not _reads(call))
    assert raw == [], "open or list through agent.sensors.safe_read"


# -- the machine tree each probe runs on ----------------------------------------


def build_machine(root: Path) -> None:
    """A small Linux and macOS tree whose every read site has something to read."""
    files = {
        "etc/passwd": "alice:x:1000:1000::/home/alice:/bin/sh\n",
        "var/lib/dpkg/status": "Package: bash\nStatus: install ok installed\nVersion: 5\n",
        "var/lib/rpm/rpmdb.sqlite": "db",
        "snap/telegram-desktop/1234/meta/snap.yaml": "name: telegram-desktop\nversion: 5.1\n",
        f"{FLATPAK}/x86_64/stable/abc/files/share/metainfo/org.telegram.desktop.metainfo.xml":
            '<release version="5.2"/>',
        f"{HOME}/.local/share/applications/t.desktop": "[Desktop Entry]\n",
        f"{HOME}/Downloads/deep/Telegram/Telegram": "",
        f"{HOME}/Desktop/tools/Updater": "",
        f"{HOME}/apps/x/Telegram/Telegram": "",
        f"{HOME}/deep/x/tdata/key": "",
        f"{HOME}/.local/share/TelegramDesktop/tdata/key": "",
        f"{MAC_HOME}/Applications/Telegram.app/Contents/Info.plist": "<plist/>",
        f"{MAC_HOME}/Applications/Tools/Other.app/Contents/Info.plist": "<plist/>",
        "opt/homebrew/Caskroom/telegram/5.0/x": "",
        "proc/4242/exe": "ELF",
        f"{HOME}/Downloads/notes": "\x7fELF",
        f"{HOME}/Downloads/unpacked/Telegram": "\x7fELF",
        f"{HOME}/bin/tool": "\x7fELF",
        "opt/app/chat": "\x7fELF",
        "var/lib/dpkg/info/bash.list": "/usr/bin/bash\n",
        "var/db/santa/santa.log": "[t] I santad: action=EXEC|decision=DENY|path=/x|args=\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for folder in ("var/lib/snapd/snaps", "var/lib/snapd/desktop/applications",
                   "usr/share/applications", "var/lib/flatpak/app"):
        (root / folder).mkdir(parents=True)
    (root / "snap/telegram-desktop/current").symlink_to("1234")
    (root / FLATPAK / "current").symlink_to("x86_64/stable")
    (root / FLATPAK / "x86_64/stable/active").symlink_to("abc")


def probe(kind: str, root: Path) -> list[str]:
    """Run one probe over `root`; its warnings."""
    if kind == "watch":
        downloads = root / HOME / "Downloads"
        watcher = InstallWatcher([downloads], lambda: None, recursive=[downloads])
        watcher.start()
        watcher.stop()
        return watcher.warnings
    if kind == "hash":
        ExeHasher(proc=root / "proc").digest("/usr/bin/telegram-desktop", 4242)
        return []
    if kind == "vouch":
        DpkgVouch(root)("/usr/bin/bash", os.stat(root / "etc/passwd"))
        return []
    if kind == "content":
        content = ContentIdentifier(ContentMatcher(_content_apps(), "linux"), proc=root / "proc")
        content.identify_process("/usr/bin/telegram-desktop", 4242)
        sensor = InstalledAppsSensor(root, "linux", content=content)
        sensor.scan()
        sensor.watch_paths()
        return sensor.warnings
    if kind == "native":
        native = NativeBlockSensor(native_sources("macos", root), root / "native.json",
                                   _stock_engine)
        native.poll()
        return native.warnings
    os_name = kind.partition(":")[2]
    sensor = InstalledAppsSensor(root, os_name, MARKERS, GLOBS)  # type: ignore[arg-type]
    sensor.scan()
    sensor.watch_paths()
    return sensor.warnings


# Both read the catalog from this checkout, which `nobody` may not be able to read (CI
# clones into a private temporary folder): built once, by root, before any child forks.
@functools.cache
def _stock_engine() -> Engine:
    catalog = load_catalog()
    return Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                  HostContext(os="macos"))


@functools.cache
def _content_apps() -> dict[str, Any]:
    return {app_id: compact_app(app) for app_id, app in load_catalog().items()}


def within_deadline(run: Callable[[], list[str]], what: str) -> list[str]:
    """`run` on a thread: its result, its exception, or a failure when it hangs."""
    outcome: list[list[str] | BaseException] = []

    def target() -> None:
        try:
            outcome.append(run())
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    thread = threading.Thread(target=target, name="hostile-probe", daemon=True)
    thread.start()
    thread.join(DEADLINE)
    if thread.is_alive():
        pytest.fail(f"{what} did not end within {DEADLINE} s (a hang)")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def as_nobody(run: Callable[[], list[str]], what: str) -> None:
    """`run` as `nobody` (tests.unprivileged.fork_as); fails on an exception or a hang."""
    # Run once as root first: every module the call needs is then imported, so the child,
    # which may not be able to read this checkout, imports nothing.
    run()
    fork_as(run, what, DEADLINE)


@pytest.fixture
def machine(world_readable_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = world_readable_tmp / "machine"
    build_machine(root)
    # An rpm command, so the rpm database folder is listed (this machine has no rpm).
    rpm = world_readable_tmp / "bin/rpm"
    rpm.parent.mkdir()
    rpm.write_text("#!/bin/sh\nexit 0\n")
    rpm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{rpm.parent}{os.pathsep}{os.environ['PATH']}")
    return root


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("site", sorted(SITES), ids="-".join)
def test_a_hostile_plant_at_every_read_site_ends_quietly(
        site: tuple[str, str], kind: str, machine: Path) -> None:
    spec = SITES[site]
    for target in spec.targets:
        what = f"{spec.probe} with a {kind} at {target}"
        with planted(kind, machine / target):
            if kind == "unreadable" and os.geteuid() == 0:
                as_nobody(lambda: probe(spec.probe, machine), what)
                continue
            found = within_deadline(lambda: probe(spec.probe, machine), what)
        if kind == "link_to_root" and not {"*", target} & set(spec.quiet):
            assert any(Path(target).name in text and "not followed" in text
                       for text in found), (what, found)
