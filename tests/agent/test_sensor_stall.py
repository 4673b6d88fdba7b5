"""A stuck or failing sensor stalls nothing else, and is reported, never silent.

Real processes under banned names; the stuck sensors block for real (an Event,
or open(2) of a FIFO nobody writes to), see tests/agent/stuck_sensors.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.daemon import STOP_BUDGET, AgentDaemon
from agent.scanning.one_scan import scan_once
from agent.scanning.scanner import Watch
from agent.scanning.sensor_health import SensorHealth, SensorWorker
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.network import NetworkSensor, RawConnection
from agent.sensors.processes import ProcessSensor
from agent.settings import load_settings
from agent.uplink.spool import SpoolError
from policies.engine import Engine
from tests.agent.conftest import FakeProcesses, wait_for
from tests.agent.stuck_sensors import TELEGRAM_DESKTOP, BlockedInstalled, make_fifo
from tests.e2e.conftest import free_port

DEADLINE = 0.3
TIMING = WatchTiming(process_interval=0.05, network_interval=0.05, sensor_deadline=DEADLINE)


class BlockedTable:
    """A connection table whose listing blocks until released (a hung netlink read)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.listings = 0

    def connections(self) -> list[RawConnection]:
        self.listings += 1
        self.release.wait()
        return []

    def owners(self, inodes: set[int]) -> dict[int, int]:
        return {}


class Running:
    """A Watch running its loop on a thread, as `warden-agent run` does."""

    def __init__(self, engine: Engine, sensors: Sensors) -> None:
        self.events: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.watch = Watch(engine, sensors, self.events.append, timing=TIMING,
                           warn=self.warnings.append)
        self.thread = threading.Thread(target=self.watch.run, daemon=True)

    def opened(self, sensor: str, **evidence: Any) -> dict[str, Any] | None:
        return next((e for e in list(self.events) if e["event"] == "opened"
                     and e["sensor"] == sensor
                     and all(e["evidence"].get(k) == v for k, v in evidence.items())), None)

    def state(self, sensor: str) -> str:
        return self.watch.health()[sensor].state


@pytest.fixture
def running(default_engine: Engine) -> Iterator[Any]:
    started: list[Running] = []

    def start(sensors: Sensors) -> Running:
        run = Running(default_engine, sensors)
        started.append(run)
        run.thread.start()
        return run

    yield start
    for run in started:
        run.watch.stop()
        run.thread.join(timeout=10)
        assert not run.thread.is_alive(), "the loop did not stop"


@pytest.mark.parametrize("how", ["event", "fifo"])
def test_a_stuck_installed_scan_holds_up_no_process_detection_and_shows_stalled(
    running: Any, fakes: FakeProcesses, tmp_path: Path, how: str,
) -> None:
    release = threading.Event()
    fifo = make_fifo(tmp_path / "dpkg-status") if how == "fifo" else None
    stuck = BlockedInstalled(release=release, fifo=fifo)
    run = running(Sensors(processes=ProcessSensor(), installed=stuck))
    try:
        wait_for(stuck.entered.is_set, what="the installed scan to start")
        process = fakes.start("telegram-desktop")
        event = wait_for(lambda: run.opened("process", pid=process.pid),
                         what="the process finding while the installed scan hangs")
        assert event["app"] == "telegram"
        wait_for(lambda: run.state("installed") == "stalled", what="installed: stalled")
        health = run.watch.health()
        assert health["process"].state == "ok"
        assert health["process"].last_ok is not None
        assert health["installed"].last_ok is None
        assert f"past its {DEADLINE:g} s deadline" in health["installed"].detail
        wait_for(lambda: any(w.startswith("the installed sensor is stalled")
                             for w in run.warnings), what="the loop to log the stall")
        # Rescans fall due (an install is noticed, the loop ticks on) but a stalled scan
        # is not started again beside the first.
        run.watch._on_installed_change()
        fakes.stop(process)
        wait_for(lambda: next((e for e in list(run.events) if e["event"] == "resolved"
                               and e.get("pid") == process.pid), None),
                 what="the process finding to resolve meanwhile")
        assert stuck.scans == 1
    finally:
        if fifo is not None:
            fifo.open("wb").close()  # a writer at last: open(2) returns, read() sees EOF
        release.set()
    # Once it returns, its findings are published and the sensor is ok again; the
    # install noticed meanwhile is scanned for then.
    wait_for(lambda: run.opened("installed", id=TELEGRAM_DESKTOP.id),
             what="the installed finding after the scan returned")
    wait_for(lambda: run.state("installed") == "ok", what="installed: ok again")
    assert run.watch.health()["installed"].last_ok is not None
    wait_for(lambda: stuck.scans == 2, what="the rescan asked for while it was stuck")
    wait_for(lambda: "the installed sensor is ok again" in run.warnings,
             what="the loop to log the recovery")


def test_a_stuck_network_listing_holds_up_no_process_detection(
    running: Any, fakes: FakeProcesses,
) -> None:
    release = threading.Event()
    table = BlockedTable(release)
    run = running(Sensors(processes=ProcessSensor(),
                          network=NetworkSensor(min_interval=0.05, table=table)))
    try:
        process = fakes.start("telegram-desktop")
        wait_for(lambda: run.opened("process", pid=process.pid), what="the process finding")
        wait_for(lambda: run.state("network") == "stalled", what="network: stalled")
        assert table.listings == 1
    finally:
        release.set()
    wait_for(lambda: run.state("network") == "ok", what="network: ok again")
    wait_for(lambda: table.listings >= 2, what="listings to resume at their interval")


def test_a_sensor_that_raises_is_error_with_the_message_and_the_next_scan_clears_it(
    running: Any,
) -> None:
    failing = BlockedInstalled(error=PermissionError(13, "Permission denied",
                                                     "/var/lib/dpkg/status"))
    run = running(Sensors(installed=failing))
    wait_for(lambda: run.state("installed") == "error", what="installed: error")
    detail = run.watch.health()["installed"].detail
    assert detail == "PermissionError: [Errno 13] Permission denied: '/var/lib/dpkg/status'"
    assert run.thread.is_alive()  # the loop lives on
    failing.error = None
    run.watch._on_installed_change()
    wait_for(lambda: run.state("installed") == "ok", what="installed: ok after a good scan")
    wait_for(lambda: run.opened("installed", id=TELEGRAM_DESKTOP.id), what="the finding")


def test_a_process_tick_that_raises_is_error_and_the_loop_lives_on(
    running: Any, fakes: FakeProcesses,
) -> None:
    class Flaky(ProcessSensor):
        failing = True

        def poll(self, verify: Any = ()) -> Any:
            if self.failing:
                raise OSError(5, "Input/output error")
            return super().poll(verify)

    sensor = Flaky()
    run = running(Sensors(processes=sensor))
    wait_for(lambda: run.state("process") == "error", what="process: error")
    assert run.watch.health()["process"].detail == "OSError: [Errno 5] Input/output error"
    sensor.failing = False
    process = fakes.start("telegram-desktop")
    wait_for(lambda: run.opened("process", pid=process.pid), what="detection once it recovers")
    assert run.state("process") == "ok"


def test_one_shot_scan_reports_a_stalled_sensor_beside_the_findings_it_has(
    default_engine: Engine, fakes: FakeProcesses,
) -> None:
    release = threading.Event()
    process = fakes.start("telegram-desktop")
    try:
        result = scan_once(default_engine, Sensors(processes=ProcessSensor(),
                                                   installed=BlockedInstalled(release=release)),
                           deadline=DEADLINE)
    finally:
        release.set()
    assert [f.app for f in result.findings if f.evidence.get("pid") == process.pid] == [
        "telegram"]
    assert [f for f in result.findings if f.sensor == "installed"] == []
    assert result.sensors["process"].state == "ok"
    assert result.sensors["installed"].state == "stalled"
    assert any(w.startswith("the installed sensor is stalled: its scan did not return within "
                            f"the {DEADLINE:g} s deadline") for w in result.warnings)
    report = result.as_dict()["sensors"]
    assert report["installed"]["state"] == "stalled" and report["installed"]["last_ok"] is None
    assert report["process"]["state"] == "ok" and report["process"]["last_ok"].endswith("Z")


def test_scan_cli_prints_findings_and_says_which_sensor_stalled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    fakes: FakeProcesses, tmp_path: Path,
) -> None:
    release = threading.Event()
    # The real sensor set is built as `scan` builds it, with the installed apps on a hang.
    monkeypatch.setattr("agent.scanning.sensor_set.InstalledAppsSensor",
                        lambda **kwargs: BlockedInstalled(release=release))
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("WARDEN_AGENT_SENSOR_DEADLINE", str(DEADLINE))
    # The process scan must beat a 0.3 s deadline: it does not also read the programs
    # other tests left running (content signatures are tested in test_content_sensor.py).
    monkeypatch.setenv("WARDEN_AGENT_CONTENT", "false")
    process = fakes.start("telegram-desktop")
    try:
        code = main(["scan", "--once", "--json", "--no-network"])
    finally:
        release.set()
    out, err = capsys.readouterr()
    assert code == 3
    report = json.loads(out)
    assert [f["app"] for f in report["findings"] if f.get("pid") == process.pid] == ["telegram"]
    assert report["sensors"]["installed"]["state"] == "stalled"
    assert "warning: the installed sensor is stalled: its scan did not return" in err


def test_a_worker_runs_one_scan_at_a_time_on_one_reused_thread() -> None:
    woken: list[bool] = []
    worker: SensorWorker[int] = SensorWorker("test", 5.0, lambda: woken.append(True))
    threads: set[int] = set()

    def job() -> int:
        threads.add(threading.get_ident())
        return len(threads)

    for _ in range(3):
        assert worker.submit(job)
        assert not worker.submit(job)  # busy until its result is taken
        done = worker.wait(5.0)
        assert done is not None and done.value == 1 and done.error is None
    assert len(threads) == 1 and len(woken) == 3
    assert worker.record.health() == SensorHealth("ok", worker.record.health().last_ok)
    worker.close()
    assert not worker.submit(job)


def test_the_daemon_stops_within_its_budget_with_the_scanner_stuck_and_closes_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    class StuckProcesses(ProcessSensor):
        """The loop itself stuck in a tick: a /proc read of a process whose memory is locked."""

        def poll(self, verify: Any = ()) -> Any:
            release.wait()
            return super().poll(verify)

    def sensors(engine: Engine, choice: Any, privileged: bool, timing: WatchTiming) -> Sensors:
        return Sensors(processes=StuckProcesses())

    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(tmp_path / "none.toml"))
    # A server nobody answers on: the agent retries, which must not hold up its stop either.
    settings = load_settings(server_url=f"http://127.0.0.1:{free_port()}",
                             state_dir=tmp_path / "state", sensor_deadline=DEADLINE,
                             installed=False, network=False, notify_command="true")
    daemon = AgentDaemon(settings, sensors=sensors)
    returned: list[int] = []
    thread = threading.Thread(target=lambda: returned.append(daemon.run()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: daemon.watch.health()["process"].state == "stalled",
                 what="process: stalled")
        reported = daemon._agent_status()["sensors"]["process"]
        assert reported["state"] == "stalled"
        assert "past its" in reported["detail"]
        daemon.stop()
        thread.join(timeout=STOP_BUDGET + 5)
        assert not thread.is_alive(), "the daemon did not stop with its scanner stuck"
        assert returned == [0]
        assert "stopping without the scanner thread(s)" in caplog.text
        with pytest.raises(SpoolError):
            daemon.spool.depth()  # closed
    finally:
        release.set()


def test_status_prints_each_sensor_from_the_running_agents_status_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps({"sensors": {
        "process": SensorHealth("ok", 1741064767.89).as_status(),
        "installed": SensorHealth("stalled", None, "a scan has been running for 75 s").as_status(),
    }}))
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("WARDEN_AGENT_STATE_DIR", str(state))
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [
        "sensor installed stalled (last good scan never): a scan has been running for 75 s",
        "sensor process  ok (last good scan 2025-03-04T05:06:07.890Z)"]
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sensors"]["installed"] == {
        "state": "stalled", "last_ok": None, "detail": "a scan has been running for 75 s"}
