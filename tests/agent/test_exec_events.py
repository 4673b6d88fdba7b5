"""Kernel exec events: real processes found the moment they exec, with polling switched off."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.scanning.scanner import Watch
from agent.scanning.sensor_health import SensorHealth
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.exec_events import (
    PROC_EVENT_EXEC,
    ExecEvents,
    parse_exec_pids,
)
from agent.sensors.processes import ProcessSensor
from policies.engine import Engine

LINUX = sys.platform.startswith("linux")
# Polling this slow never happens within a test: whatever is found came from an exec event.
NO_POLLING = WatchTiming(process_interval=3600.0, process_rescan_interval=3600.0)


def _event(what: int, pid: int) -> bytes:
    body = struct.pack("=IIQ", what, 0, 0) + struct.pack("=ii", pid, pid)
    cn_msg = struct.pack("=IIIIHH", 1, 1, 0, 0, len(body), 0) + body
    return struct.pack("=IHHII", 16 + len(cn_msg), 3, 0, 0, 0) + cn_msg


@pytest.mark.parametrize(("datagram", "pids"), [
    (_event(PROC_EVENT_EXEC, 42), [42]),
    (_event(0x1, 42), []),  # a fork is not an exec
    (_event(PROC_EVENT_EXEC, 7) + _event(0x80000000, 8) + _event(PROC_EVENT_EXEC, 9), [7, 9]),
    (_event(PROC_EVENT_EXEC, 42)[:40], []),  # torn: ignored, never an exception
    (b"", []),
])
def test_exec_events_are_parsed(datagram: bytes, pids: list[int]) -> None:
    assert parse_exec_pids(datagram) == pids


def _connector_works() -> bool:
    events = ExecEvents(probe_timeout=1.0)
    try:
        return events.start(lambda pid: None, lambda: None)
    finally:
        events.stop()


_connector = pytest.mark.skipif(
    not LINUX or os.geteuid() != 0 or not _connector_works(),
    reason="the kernel sends no process events here (needs Linux, root, init namespaces)")


def needs_connector(test: Callable[..., None]) -> Callable[..., None]:
    """The kernel's process events reach the initial PID namespace only, so these run with
    the machine's own processes (the `whole_machine` mark: tests/conftest.py)."""
    return pytest.mark.whole_machine(_connector(test))


class Running:
    """A Watch on its own thread, as in the agent, collecting its events."""

    def __init__(self, engine: Engine, sensors: Sensors) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.watch = Watch(engine, sensors, self._emit, timing=NO_POLLING)
        self.thread = threading.Thread(target=self.watch.run, daemon=True)
        self.thread.start()

    def _emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def opened(self, pid: int) -> dict[str, Any] | None:
        with self._lock:
            return next((e for e in self.events
                         if e["event"] == "opened" and e["evidence"].get("pid") == pid), None)

    def close(self) -> None:
        self.watch.stop()
        self.thread.join(5)


@pytest.fixture
def running(default_engine: Engine) -> Iterator[Callable[[Sensors], Running]]:
    started: list[Running] = []

    def start(sensors: Sensors) -> Running:
        started.append(Running(default_engine, sensors))
        return started[-1]

    yield start
    for item in started:
        item.close()


@needs_connector
@pytest.mark.parametrize("name", ["Telegram", "telegram-desktop"])
def test_a_new_banned_process_is_found_by_its_exec_event(
    name: str, running: Callable[[Sensors], Running], fakes: Any, wait: Any
) -> None:
    exec_events = ExecEvents()
    scanner = running(Sensors(processes=ProcessSensor(young_seconds=0),
                              exec_events=exec_events))
    wait(lambda: scanner.watch.health()["process"].last_ok, what="the first scan")
    process = fakes.start(name)
    opened = wait(lambda: scanner.opened(process.pid), what=f"{name} found by its exec")
    assert opened["app"] == "telegram"
    assert opened["evidence"]["name"] == name
    assert opened["sensor"] == "process"


@needs_connector
def test_an_old_process_that_execs_a_banned_program_is_found_at_once(
    running: Callable[[Sensors], Running], fakes: Any, wait: Any, tmp_path: Path
) -> None:
    # A long-lived shell exec's Telegram in place: same pid, same start time. Ticks never
    # read known pids again once they are old; the exec event makes the sensor look.
    banned = fakes.binary("Telegram")
    shell = subprocess.Popen(["/bin/sh", "-c", f'read line; exec "{banned}" 300'],
                             stdin=subprocess.PIPE)
    fakes.running.append(shell)
    sensor = ProcessSensor(young_seconds=0)
    scanner = running(Sensors(processes=sensor, exec_events=ExecEvents()))
    wait(lambda: any(o.pid == shell.pid for o in sensor.observations()),
         what="the shell to be known")
    assert scanner.opened(shell.pid) is None
    assert shell.stdin is not None
    shell.stdin.write(b"go\n")
    shell.stdin.flush()
    opened = wait(lambda: scanner.opened(shell.pid), what="the exec in place to be found")
    assert opened["evidence"]["exe"] == str(banned)


class LosingSource:
    """Exec events whose kernel dropped some: only `on_lost` is called."""

    def __init__(self) -> None:
        self.lose: Callable[[], None] = lambda: None

    def start(self, on_exec: Callable[[int], None], on_lost: Callable[[], None]) -> bool:
        self.lose = on_lost
        return True

    def stop(self) -> None:
        pass

    def health(self) -> SensorHealth:
        return SensorHealth("ok")


def test_lost_exec_events_trigger_a_full_rescan(
    running: Callable[[Sensors], Running], fakes: Any, wait: Any
) -> None:
    source = LosingSource()
    scanner = running(Sensors(processes=ProcessSensor(young_seconds=0), exec_events=source))
    process = fakes.start("Telegram")
    wait(lambda: scanner.watch.health().get("process") is not None
         and scanner.watch.health()["process"].last_ok, what="the first scan")
    source.lose()  # ENOBUFS: the rescan finds what no event announced
    opened = wait(lambda: scanner.opened(process.pid), what="the rescan to find Telegram")
    assert opened["app"] == "telegram"


@pytest.mark.skipif(not LINUX or os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to make a namespace without events")
def test_without_events_the_agent_polls_and_says_so(tmp_path: Path) -> None:
    # A new network namespace: the kernel takes the subscription and sends nothing,
    # exactly as in a container. The sensor must notice and report `fallback`.
    script = (
        "import json\n"
        "from agent.sensors.exec_events import ExecEvents\n"
        "events = ExecEvents(probe_timeout=0.5)\n"
        "started = events.start(lambda pid: None, lambda: None)\n"
        "health = events.health()\n"
        "print(json.dumps({'started': started, 'state': health.state,"
        " 'detail': health.detail}))\n"
    )
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    report = json.loads(done.stdout)
    assert report["started"] is False
    assert report["state"] == "fallback"
    assert "polling" in report["detail"]


LOADER = Path("/lib64/ld-linux-x86-64.so.2")


@pytest.mark.skipif(not LOADER.exists(), reason="no x86-64 glibc loader here")
def test_a_loader_launch_is_ended_within_a_second_in_enforce_mode(
    make_engine: Any, fakes: Any, wait: Any
) -> None:
    # `ld-linux ./Telegram` never execs Telegram: no exec permission event names it, and
    # the kernel calls the process `ld-linux-x86-64`. The process sensor sees through it.
    from agent.responding.actions import ActionRunner
    from agent.responding.notify import RecordingNotifier

    engine = make_engine("name: p\nmode: enforce\nrules:\n"
                         "  - {app: telegram, verdict: deny, action: block}\n")
    banned = fakes.binary("Telegram")
    process = subprocess.Popen([str(LOADER), "./Telegram", "300"], cwd=banned.parent)
    fakes.running.append(process)
    runner = ActionRunner(RecordingNotifier(), lambda: engine.bundle, "linux")
    events: list[dict[str, Any]] = []
    watch = Watch(engine, Sensors(processes=ProcessSensor()), events.append,
                  timing=WatchTiming(process_interval=0.25))
    watch.start()

    def opened() -> dict[str, Any] | None:
        watch.step()
        return next((e for e in events if e["event"] == "opened"
                     and e["evidence"]["pid"] == process.pid), None)

    event = wait(opened, timeout=1.0, what="the loader launch to be found")
    assert event["evidence"]["exe"] == str(banned)
    from policies.engine import Finding
    finding = Finding(**{name: event[name] for name in Finding.__dataclass_fields__})
    results = runner.handle(finding)
    assert any(r["action"] == "terminate" and r["ok"] for r in results), results
    assert process.wait(timeout=1.0) != 0
