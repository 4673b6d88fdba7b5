"""Hostile input for the agent, generated: the counterpart of the server's API fuzz test.

Hypothesis makes process tables (names, command lines, exe paths, users, pids
that come and go or are reused), /proc files with any bytes a process can put
there, and file and folder names a user can create; they go through the real
sensors (over the injectable process reader and a machine tree on disk) and
the policy engine, on every OS it judges for. Nothing may raise, and every
example must end within the Hypothesis deadline. Generation is derandomised
and no example database is kept, so a run is reproducible.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.process_readers import ProcessInfo
from agent.sensors.processes import ProcessSensor
from agent.sensors.procfs import ProcfsReader
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy
from policies.observations import ConnectionObservation, InstalledObservation, ProcessObservation

FUZZ = settings(max_examples=60, deadline=dt.timedelta(seconds=5), derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow])

_catalog = load_catalog()
_policy = load_policy(default_policy_path(), _catalog)
ENGINES = [Engine(compile_bundle(_policy, _catalog), HostContext(os=os_name))
           for os_name in ("linux", "macos", "windows")]

# Text as programs and users write it: any character but NUL (which ends a C string).
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
               max_size=300)
# Near-misses of the names the catalog looks for.
names = st.one_of(text, st.sampled_from([
    "telegram-desktop", "Telegram", "Telegram.exe", "Telegram Desktop", "AyuGram",
    "signal-desktop", "tdata", "Updater", "org.telegram.desktop", "ru.keepcoder.Telegram",
    "TELEGRAM.EXE", "telegram-desktop ", "Telegram\u200b", "/opt/Telegram/Telegram",
    "C:\\Users\\bob\\AppData\\Roaming\\Telegram Desktop\\Telegram.exe", "~", "..", "*", "[",
]))
paths = st.one_of(st.none(), names, st.lists(names, max_size=8).map("/".join))
process_infos = st.builds(
    ProcessInfo, pid=st.integers(1, 2**22), name=names,
    create_time=st.floats(0, 2e9, allow_nan=False), exe=paths,
    cmdline=st.lists(names, max_size=12).map(tuple), username=st.one_of(st.none(), text),
    ppid=st.one_of(st.none(), st.integers(0, 2**22)), denied=st.booleans(),
    zombie=st.booleans())


class TableReader:
    """A ProcessReader over a table the test rewrites between ticks."""

    def __init__(self, table: list[ProcessInfo]) -> None:
        self.table = {info.pid: info for info in table}

    def pids(self) -> list[int]:
        return list(self.table)

    def read(self, pid: int) -> ProcessInfo | None:
        return self.table.get(pid)

    def read_all(self) -> Iterator[ProcessInfo]:
        yield from list(self.table.values())

    def start_time(self, pid: int) -> tuple[float, bool] | None:
        info = self.table.get(pid)
        return None if info is None else (info.create_time, info.zombie)

    def generation(self) -> int | None:
        return None

    def created_between(self, first: int, last: int) -> list[int] | None:
        return None


def judge(observations: list[ProcessObservation] | list[InstalledObservation]) -> None:
    for engine in ENGINES:
        for finding in engine.evaluate_all(observations, include_allowed=True):
            finding.as_dict()


@FUZZ
@given(first=st.lists(process_infos, max_size=30), second=st.lists(process_infos, max_size=30))
def test_process_tables(first: list[ProcessInfo], second: list[ProcessInfo]) -> None:
    reader = TableReader(first)
    sensor = ProcessSensor(reader, own_pid=0, young_seconds=0)
    judge(sensor.scan())
    reader.table = {info.pid: info for info in second}  # exits, newcomers, reused pids
    changes = sensor.poll(verify=[info.pid for info in first])
    judge(changes.new)
    judge(sensor.rescan().new)
    sensor.warnings()


comm_bytes = st.binary(max_size=64).filter(lambda data: b"\x00" not in data)


@FUZZ
@given(comm=comm_bytes, cmdline=st.binary(max_size=4096), exe=st.one_of(st.none(), names))
def test_proc_files_with_any_bytes(comm: bytes, cmdline: bytes, exe: str | None) -> None:
    with tempfile.TemporaryDirectory() as proc:
        folder = Path(proc) / "4242"
        folder.mkdir()
        # The kernel's format around what a process controls: its name and arguments.
        (folder / "stat").write_bytes(b"4242 (" + comm + b") S 1 " + b"0 " * 16 + b"100 0\n")
        (folder / "cmdline").write_bytes(cmdline)
        if exe and "\x00" not in exe:
            (folder / "exe").symlink_to(exe)
        info = ProcfsReader(Path(proc)).read(4242)
    assert info is not None
    judge([ProcessObservation(pid=info.pid, name=info.name, exe=info.exe,
                              cmdline=info.cmdline)])


file_names = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
                     min_size=1, max_size=60).filter(
    lambda name: name not in (".", "..") and len(os.fsencode(name)) <= 255)
PLACES = ("home/alice/Downloads", "home/alice/Downloads/x", "home/alice/.local/share/applications",
          "home/alice/.local/share/flatpak/app", "snap", "var/lib/snapd/desktop/applications",
          "opt", "Users/alice/Applications", "Users/alice/Downloads")


@FUZZ
@given(entries=st.lists(st.tuples(st.sampled_from(PLACES), st.one_of(file_names, names),
                                  st.sampled_from(["file", "dir", "link"])), max_size=25),
       blob=st.binary(max_size=2048))
def test_file_and_folder_names(entries: list[tuple[str, str, str]], blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tree:
        root = Path(tree)
        for place, name, kind in entries:
            if not name or "/" in name or "\x00" in name or name in (".", ".."):
                continue
            path = root / place / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() or path.is_symlink():
                continue
            if kind == "dir":
                path.mkdir()
                (path / "Info.plist").write_bytes(blob)
            elif kind == "link":
                path.symlink_to(name)  # anywhere the name says, itself included
            else:
                path.write_bytes(blob)
        for os_name, engine in zip(("linux", "macos", "windows"), ENGINES, strict=True):
            sensor = InstalledAppsSensor(root, os_name, engine.folder_marker_files,  # type: ignore[arg-type]
                                         engine.folder_marker_globs)
            judge(sensor.scan())
            sensor.watch_paths()


@FUZZ
@given(source=st.sampled_from(["deb", "rpm", "snap", "flatpak", "desktop", "app_bundle",
                               "folder", "msix", "windows_uninstall", "homebrew"]),
       ident=names, path=paths, version=st.one_of(st.none(), text), user=st.one_of(
           st.none(), text), contents=st.frozensets(names, max_size=6),
       remote=st.ip_addresses().map(str), port=st.integers(0, 65535), host=st.one_of(
           st.none(), names))
def test_engine_observations(source: str, ident: str, path: str | None, version: str | None,
                             user: str | None, contents: frozenset[str], remote: str,
                             port: int, host: str | None) -> None:
    installed = InstalledObservation(source=source, id=ident, path=path,  # type: ignore[arg-type]
                                     version=version, user=user, display_name=ident,
                                     publisher=user, contents=contents)
    connection = ConnectionObservation(remote_ip=remote, remote_port=port, remote_host=host,
                                       process_name=ident)
    for engine in ENGINES:
        for observation in (installed, connection):
            for finding in engine.evaluate(observation, include_allowed=True):
                finding.as_dict()
