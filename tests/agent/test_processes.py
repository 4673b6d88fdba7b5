"""The process sensor with real processes: detection, full names, exits, exec, hashes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.scanning.scanner import Watch
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.process_readers import ProcessInfo, ProcessReader, PsutilReader, full_name
from agent.sensors.processes import ExeHasher, ProcessSensor
from agent.sensors.procfs import ProcfsReader
from policies.engine import Engine

LINUX = sys.platform.startswith("linux")

# A policy whose own app has a 20-character process name. Its first 15
# characters ("corp-chat-deskt") are all the kernel keeps in comm, so only a
# sensor that recovers the full name can tell it from "corp-chat-desktop-v3".
CORPCHAT_POLICY = """
name: corp
apps:
  - id: corpchat
    name: CorpChat
    signatures:
      process:
        names: [corp-chat-desktop-v2]
rules:
  - app: corpchat
    verdict: deny
    action: notify
"""


@pytest.fixture(params=["procfs", "psutil"] if LINUX else ["psutil"])
def reader(request: pytest.FixtureRequest) -> ProcessReader:
    return ProcfsReader() if request.param == "procfs" else PsutilReader()


class Follow:
    """A Watch over the process sensor only, stepped by the test."""

    def __init__(self, engine: Engine, sensor: ProcessSensor, wait: Callable[..., Any]) -> None:
        self.events: list[dict[str, Any]] = []
        self.sensor = sensor
        self.watch = Watch(engine, Sensors(processes=sensor), self.events.append,
                           timing=WatchTiming(process_interval=0.001))
        self._wait = wait
        self.watch.start()

    def find(self, kind: str, pid: int) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == kind and e.get("pid") == pid), None)

    def wait_event(self, kind: str, pid: int) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            self.watch.step()
            return self.find(kind, pid)

        event: dict[str, Any] = self._wait(check, what=f"{kind} event for pid {pid}")
        return event

    def wait_seen(self, pid: int) -> None:
        """Until the sensor has read `pid` (whatever it decided about it)."""
        def check() -> bool:
            self.watch.step()
            return any(o.pid == pid for o in self.sensor.observations())

        self._wait(check, what=f"pid {pid} to be observed")


@pytest.mark.parametrize("name", ["telegram-desktop", "Telegram", "ayugram-desktop"])
def test_banned_process_is_detected_then_resolved_when_it_exits(
    name: str, reader: ProcessReader, default_engine: Engine, fakes: Any, wait: Any
) -> None:
    follow = Follow(default_engine, ProcessSensor(reader), wait)
    process = fakes.start(name)

    opened = follow.wait_event("opened", process.pid)
    assert opened["app"] == "telegram"
    assert opened["verdict"] == "deny"
    assert opened["sensor"] == "process"
    assert opened["alternative"] == "signal"
    assert opened["evidence"]["name"] == name  # the full name, not the 15-char comm
    assert opened["evidence"]["exe"] == str(fakes.directory / "bin0" / name)
    assert opened["evidence"]["username"]

    fakes.stop(process)
    resolved = follow.wait_event("resolved", process.pid)
    assert resolved["key"] == opened["key"]
    assert [e["event"] for e in follow.events if e.get("pid") == process.pid] == [
        "opened", "resolved"]


def test_twenty_character_name_is_matched_in_full(
    reader: ProcessReader, make_engine: Any, fakes: Any, wait: Any
) -> None:
    engine = make_engine(CORPCHAT_POLICY)
    follow = Follow(engine, ProcessSensor(reader), wait)
    banned = fakes.start("corp-chat-desktop-v2")
    lookalike = fakes.start("corp-chat-desktop-v3")  # same first 15 characters

    opened = follow.wait_event("opened", banned.pid)
    assert len(opened["evidence"]["name"]) == 20
    assert opened["app"] == "corpchat"
    assert opened["matched"] == "process.names: corp-chat-desktop-v2"

    follow.wait_seen(lookalike.pid)
    seen = {o.pid: o for o in follow.sensor.observations()}
    assert seen[lookalike.pid].name == "corp-chat-desktop-v3"
    assert follow.find("opened", lookalike.pid) is None


def test_signal_running_is_never_flagged(
    reader: ProcessReader, default_engine: Engine, fakes: Any, wait: Any
) -> None:
    follow = Follow(default_engine, ProcessSensor(reader), wait)
    signals = [fakes.start("signal-desktop"), fakes.start("Signal")]
    telegram = fakes.start("Telegram")  # proves the loop would have reported them

    follow.wait_event("opened", telegram.pid)
    for process in signals:
        follow.wait_seen(process.pid)
        assert follow.find("opened", process.pid) is None
    assert {e["pid"] for e in follow.events if e["event"] == "opened"} & {
        p.pid for p in signals} == set()


# The machine's own processes, not a test worker's private PID namespace (tests/conftest.py).
@pytest.mark.whole_machine
def test_clean_machine_has_no_denied_process(reader: ProcessReader, default_engine: Engine) -> None:
    sensor = ProcessSensor(reader)
    observations = sensor.scan()
    assert len(observations) > 3  # really looked at the machine
    # Fake Telegrams that other tests on this machine may be running live in
    # temporary folders; every other process must come out clean.
    temp = os.path.realpath(tempfile.gettempdir())
    system = [o for o in observations if not (o.exe or "").startswith(temp)]
    denied = [f for f in default_engine.evaluate_all(system) if f.verdict == "deny"]
    assert denied == []


def test_zombie_resolves_before_it_is_reaped(
    reader: ProcessReader, default_engine: Engine, fakes: Any, wait: Any
) -> None:
    # Not young: the exit must be noticed by the per-tick check of pids with findings.
    follow = Follow(default_engine, ProcessSensor(reader, young_seconds=0), wait)
    process = fakes.start("telegram-desktop")
    follow.wait_event("opened", process.pid)

    os.kill(process.pid, signal.SIGKILL)  # no wait(): the pid stays listed, as a zombie
    assert process.pid in reader.pids()
    follow.wait_event("resolved", process.pid)
    assert process.pid in reader.pids()
    process.wait()


def test_exec_after_start_is_noticed(
    reader: ProcessReader, default_engine: Engine, fakes: Any, wait: Any
) -> None:
    """A launcher that becomes Telegram (same pid) is re-read while it is young."""
    target = fakes.binary("telegram-desktop")
    follow = Follow(default_engine, ProcessSensor(reader, young_seconds=600), wait)
    launcher = subprocess.Popen(["/bin/sh", "-c", f'read line; exec "{target}" 300'],
                                stdin=subprocess.PIPE)
    fakes.running.append(launcher)
    follow.wait_seen(launcher.pid)
    assert follow.find("opened", launcher.pid) is None

    assert launcher.stdin is not None
    launcher.stdin.write(b"go\n")
    launcher.stdin.flush()

    # A read torn by the exec may first open it on the new name with the old exe;
    # the re-read while young restates it with the exe it really runs.
    def opened_as_telegram() -> dict[str, Any] | None:
        follow.watch.step()
        return next((event for event in follow.events if event["event"] == "opened"
                     and event.get("pid") == launcher.pid
                     and event["evidence"]["exe"] == str(target)), None)

    opened = wait(opened_as_telegram, what="the finding with Telegram's exe")
    assert opened["app"] == "telegram"


@pytest.mark.skipif(not LINUX, reason="tears a /proc read on purpose")
def exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def test_a_read_torn_by_an_exec_is_read_again_while_young(
    default_engine: Engine, fakes: Any, wait: Any
) -> None:
    """A read is several files: a process that execs between them comes out with its
    launcher's name but its new exe. A look at a young process must not trust that exe.

    The exec is let through right after the name was read: what a busy agent (its
    watch thread waiting for the GIL between two reads) does by chance at start-up.
    """
    target = fakes.binary("telegram-desktop")
    launcher = subprocess.Popen(["/bin/sh", "-c", f'read line; exec "{target}" 300'],
                                stdin=subprocess.PIPE)
    fakes.running.append(launcher)
    shell = os.path.realpath("/bin/sh")
    wait(lambda: exe_of(launcher.pid) == shell, what="the launcher")

    class ExecBetweenReads(ProcfsReader):
        torn = False

        def _stat(self, pid: int) -> tuple[str, str, int, float] | None:
            stat = super()._stat(pid)  # the name (comm), read first
            if pid == launcher.pid and not self.torn:
                self.torn = True
                assert launcher.stdin is not None
                launcher.stdin.write(b"go\n")
                launcher.stdin.flush()
                wait(lambda: exe_of(pid) == str(target), what="the exec")
            return stat

    sensor = ProcessSensor(ExecBetweenReads(), young_seconds=600)
    follow = Follow(default_engine, sensor, wait)
    (torn,) = [o for o in sensor.observations() if o.pid == launcher.pid]
    assert (torn.name, torn.exe) == ("sh", str(target))
    assert follow.find("opened", launcher.pid) is None

    opened = follow.wait_event("opened", launcher.pid)
    assert opened["evidence"]["name"] == "telegram-desktop"


def test_rescan_catches_exec_of_an_old_process(
    reader: ProcessReader, default_engine: Engine, fakes: Any, wait: Any
) -> None:
    target = fakes.binary("ayugram-desktop")
    sensor = ProcessSensor(reader, young_seconds=0)  # nothing is young: ticks never re-read
    sensor.scan()
    launcher = subprocess.Popen(["/bin/sh", "-c", f'read line; exec "{target}" 300'],
                                stdin=subprocess.PIPE)
    fakes.running.append(launcher)
    wait(lambda: any(o.pid == launcher.pid for o in sensor.poll().new))
    assert launcher.stdin is not None
    launcher.stdin.write(b"go\n")
    launcher.stdin.flush()

    def exec_done() -> bool:
        info = reader.read(launcher.pid)
        return info is not None and info.exe == str(target)

    wait(exec_done)
    # A tick reads only new pids (other tests may be starting some): not this one.
    assert launcher.pid not in {o.pid for o in sensor.poll().new}
    changes = sensor.rescan()
    (observation,) = [o for o in changes.new if o.pid == launcher.pid]
    assert observation.name == "ayugram-desktop"
    assert observation.identity in changes.gone
    assert [f.app for f in default_engine.evaluate(observation)] == ["telegram"]


def test_rule_on_sha256_hashes_executables(make_engine: Any, fakes: Any, wait: Any) -> None:
    binary = fakes.binary("innocent-tool", extra=os.urandom(16))
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    engine = make_engine(f"""
name: hashes
apps:
  - id: renamed
    name: Renamed Telegram
    signatures:
      process:
        sha256: ["{digest}"]
rules:
  - app: renamed
    verdict: deny
""")
    assert engine.needs_sha256
    follow = Follow(engine, ProcessSensor(hash_exes=engine.needs_sha256), wait)
    process = subprocess.Popen([str(binary), "300"])
    fakes.running.append(process)
    opened = follow.wait_event("opened", process.pid)
    assert opened["matched"] == f"process.sha256: {digest}"
    assert opened["evidence"]["sha256"] == digest


def test_no_hashing_unless_a_rule_needs_it(default_engine: Engine, fakes: Any) -> None:
    fakes.start("telegram-desktop")
    assert not default_engine.needs_sha256
    assert all(o.sha256 is None for o in ProcessSensor().scan())


def test_exe_hasher_caches_by_file_identity(tmp_path: Path) -> None:
    path = tmp_path / "exe"
    path.write_bytes(b"one")
    hasher = ExeHasher()
    assert hasher.digest(str(path)) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"other")  # new size and mtime: a new cache key
    assert hasher.digest(str(path)) == hashlib.sha256(b"other").hexdigest()
    assert hasher.digest(str(tmp_path / "missing")) is None


def test_own_process_is_skipped(fakes: Any) -> None:
    process = fakes.start("telegram-desktop")
    assert os.getpid() not in {o.pid for o in ProcessSensor().scan()}
    assert process.pid not in {o.pid for o in ProcessSensor(own_pid=process.pid).scan()}


def test_a_tick_reads_only_new_pids(reader: ProcessReader, fakes: Any, wait: Any) -> None:
    class Counting:
        def __init__(self, inner: ProcessReader) -> None:
            self.inner, self.reads = inner, 0

        def pids(self) -> list[int]:
            return self.inner.pids()

        def read(self, pid: int) -> Any:
            self.reads += 1
            return self.inner.read(pid)

        def read_all(self) -> Any:
            return self.inner.read_all()

        def start_time(self, pid: int) -> Any:
            return self.inner.start_time(pid)

        def generation(self) -> int | None:
            return self.inner.generation()

        def created_between(self, first: int, last: int) -> list[int] | None:
            return self.inner.created_between(first, last)

    counting = Counting(reader)
    sensor = ProcessSensor(counting, young_seconds=0)
    # A few processes already there, so the first scan has something to read in full.
    present = {fakes.start(f"already-here-{index}").pid for index in range(4)}
    first = sensor.scan()
    assert present <= {o.pid for o in first}
    before = len(first)
    sensor.poll()
    counting.reads = 0
    process = fakes.start("sleep-a-little")
    wait(lambda: any(o.pid == process.pid for o in sensor.poll().new))
    # Work in proportion to what changed: the new process (and any other newcomer
    # on this busy test machine), not every process that exists.
    assert 1 <= counting.reads < before


def test_idle_tick_skips_the_listing_until_a_process_is_created(fakes: Any) -> None:
    class Quiet(PsutilReader):
        """The real machine, with a generation the test controls."""

        def __init__(self) -> None:
            self.value, self.listings = 1, 0

        def pids(self) -> list[int]:
            self.listings += 1
            return super().pids()

        def generation(self) -> int | None:
            return self.value

    reader = Quiet()
    sensor = ProcessSensor(reader, young_seconds=0)
    sensor.scan()
    process = fakes.start("telegram-desktop")
    assert sensor.poll().new == []  # the kernel said: nothing new
    assert reader.listings == 0
    reader.value = 2
    assert [o.pid for o in sensor.poll().new if o.pid == process.pid] == [process.pid]
    assert reader.listings == 1
    # Exits of processes with findings are checked pid by pid, without a listing.
    fakes.stop(process)
    assert sensor.poll(verify=[process.pid]).gone != []
    assert reader.listings == 1


@pytest.mark.skipif(not LINUX, reason="/proc/loadavg is Linux's")
def test_procfs_names_the_processes_created_between_two_generations(fakes: Any) -> None:
    reader = ProcfsReader()
    before = reader.generation()
    assert isinstance(before, int)
    process = fakes.start("sleep")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)  # threads take pids too
    thread.start()
    try:
        after = reader.generation()
        assert isinstance(after, int) and after != before
        created = reader.created_between(before, after)
        if created is None:
            pytest.skip("the pid counter wrapped or jumped; nothing to probe")
        assert process.pid in created
        assert thread.native_id not in created
        assert reader.created_between(after, after) == []
        assert reader.created_between(after, after - 1) is None  # a wrap: list instead
    finally:
        stop.set()
        thread.join()


@pytest.mark.skipif(not LINUX, reason="compares the /proc reader with psutil")
def test_procfs_reader_agrees_with_psutil(fakes: Any, wait: Any) -> None:
    process = fakes.start("corp-chat-desktop-v2", "300", "5")
    # Compare after the exec has finished: between fork and exec the child still wears the
    # test's name, and inside execve the new exe is set before the new name and argv are.
    def exec_finished() -> bool:
        seen = ProcfsReader().read(process.pid)
        return (seen is not None and seen.name == "corp-chat-desktop-v2"
                and seen.cmdline[1:] == ("300", "5")
                and (exe_of(process.pid) or "").endswith("/corp-chat-desktop-v2"))
    wait(exec_finished, what="the exec")
    fast, portable = ProcfsReader().read(process.pid), PsutilReader().read(process.pid)
    assert fast is not None and portable is not None
    assert fast == portable
    assert fast.name == "corp-chat-desktop-v2"
    assert fast.cmdline[1:] == ("300", "5")
    assert ProcfsReader().start_time(process.pid) == (fast.create_time, False)
    fakes.stop(process)
    assert ProcfsReader().read(process.pid) is None
    assert PsutilReader().read(process.pid) is None


@pytest.mark.parametrize(
    ("comm", "exe", "cmdline", "expected"),
    [
        # short names are complete already
        ("Telegram", "/opt/Telegram/Telegram", ["x"], "Telegram"),
        # comm cut to 15 characters, argv[0] has the rest
        ("telegram-deskto", None, ["/usr/bin/telegram-desktop"], "telegram-desktop"),
        # argv[0] rewritten to something else: the exe still knows
        ("corp-chat-deskt", "/x/corp-chat-desktop-v2", ["worker"], "corp-chat-desktop-v2"),
        # neither extends comm: keep what the kernel said
        ("kworker/0:1-eve", None, [], "kworker/0:1-eve"),
        ("averyveryverylo", "/bin/other", ["/bin/other"], "averyveryverylo"),
    ],
)
def test_full_name(comm: str, exe: str | None, cmdline: list[str], expected: str) -> None:
    assert full_name(comm, exe, cmdline) == expected


def test_warnings_say_what_could_not_be_seen() -> None:
    class Denied:
        """Stands in for other users' processes, which root on this machine can read."""

        def pids(self) -> list[int]:
            return [10, 11]

        def read(self, pid: int) -> Any:
            return None

        def read_all(self) -> Any:
            yield ProcessInfo(pid=10, name="a", create_time=1.0, denied=True)
            yield ProcessInfo(pid=11, name="b", create_time=1.0, denied=True)

        def start_time(self, pid: int) -> Any:
            return (1.0, False)

        def generation(self) -> int | None:
            return None

        def created_between(self, first: int, last: int) -> list[int] | None:
            return None

    sensor = ProcessSensor(Denied(), privileged=False)
    sensor.scan()
    assert sensor.denied_count == 2
    assert sensor.warnings() == [
        "ran as ordinary user: 2 processes of other users could not be fully inspected "
        "(run as root/Administrator to see them)"]


@pytest.mark.parametrize(("looks_older_by", "read_again"), [
    (2.5, True),   # 0.5 s old but its start time, on a whole-second boot time, says 2.5 s
    (3.5, False),  # past the young window even by the slowest reckoning
])
def test_a_young_process_is_read_again_despite_a_rounded_boot_time(
    looks_older_by: float, read_again: bool
) -> None:
    now = 1_000.0

    class OneProcess:
        reads = 0

        def pids(self) -> list[int]:
            return [10]

        def read(self, pid: int) -> Any:
            self.reads += 1
            return ProcessInfo(pid=10, name="sh", create_time=now - looks_older_by)

        def read_all(self) -> Any:
            yield ProcessInfo(pid=10, name="sh", create_time=now - looks_older_by)

        def start_time(self, pid: int) -> Any:
            return (now - looks_older_by, False)

        def generation(self) -> int | None:
            return 1

        def created_between(self, first: int, last: int) -> list[int] | None:
            return []

    reader = OneProcess()
    sensor = ProcessSensor(reader, young_seconds=2.0, clock=lambda: now)
    sensor.scan()
    sensor.poll()
    assert (reader.reads > 0) == read_again
