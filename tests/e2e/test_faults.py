"""Faults under load: nothing acknowledged is lost, nothing is stored twice.

Server side (tests/e2e/fault_scenarios.py does the work; bench/faults.py reports
the same runs as figures):
- `kill -9` of `warden server run` while 50 simulated agents upload, on SQLite
  and on PostgreSQL: every event an agent saw acknowledged is in the database,
  and the agents deliver the rest exactly once;
- PostgreSQL stopped and started under the same load: the server answers 503
  (JSON, Retry-After) meanwhile, never 500, and serves again by itself.

Agent side: `warden-agent run` whose state directory is on a full or read-only
file system (a tiny tmpfs of its own) says so in one line and exits; once the
disk is back, what it had spooled reaches the server, once. A disk that fills
while it runs is reported once; the agent holds new events in memory meanwhile,
keeps checking in, and saves and delivers them when there is room again.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer
from tests.e2e.fault_scenarios import (
    ScenarioResult,
    database_outage_under_load,
    kill_server_under_load,
)
from tests.e2e.pg_control import base_url, can_control_cluster, fresh_database
from tests.e2e.sim_agents import FleetPlan

pytestmark = pytest.mark.slow

SYNC = 45.0  # enrollment + check-in every 5 s (+ jitter) + upload
CHECKINS = 20.0  # three check-ins at 5 s (+ 20 % jitter)
PLAN = FleetPlan(agents=50, events_per_agent=40)


@pytest.fixture(params=["sqlite", "postgresql"])
def loaded_server(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> Iterator[tuple[WardenServer, str]]:
    """A started server and the URL of its database, on SQLite or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        server = WardenServer(tmp_path / "server", tmp_path / "server.log")
        with running(server):
            yield server, f"sqlite:///{tmp_path / 'server' / 'warden.db'}"
        return
    cluster = base_url()
    if cluster is None:
        pytest.skip("PostgreSQL fault tests need WARDEN_TEST_DATABASE_URL")
    with fresh_database(cluster) as url:
        server = WardenServer(tmp_path / "server", tmp_path / "server.log",
                              env={"WARDEN_DATABASE_URL": url})
        with running(server):
            yield server, url


@contextmanager
def running(server: WardenServer) -> Iterator[WardenServer]:
    server.start()
    try:
        yield server
    finally:
        # SIGKILL: a scenario may leave it mid-request; its database is checked already.
        server.stop(signal.SIGKILL)


def assert_delivered_exactly_once(result: ScenarioResult, server: WardenServer) -> None:
    delivery, tally = result.delivery, result.tally
    assert result.finished, f"agents still had events after the deadline: {delivery}"
    # Acknowledged means committed: nothing an agent was told is stored may be missing.
    assert delivery.acknowledged_missing == 0, delivery
    assert delivery.produced == delivery.stored == PLAN.agents * PLAN.events_per_agent, delivery
    assert delivery.undelivered == delivery.unexpected == 0, delivery
    # Applied once: no id answered "accepted" twice, and each finding was opened as
    # many times as its events say (a replayed open would count again).
    assert delivery.accepted_twice == 0, delivery
    assert delivery.finding_mismatches == [], delivery.finding_mismatches
    assert delivery.refusals == [], delivery.refusals
    assert tally.server_errors == 0, tally.statuses
    assert tally.malformed == [], tally.malformed
    # The server's own API agrees with its database.
    assert len(server.findings(app="telegram")) == PLAN.agents * PLAN.keys_per_agent


def test_kill_9_under_load_loses_nothing_and_stores_nothing_twice(
    loaded_server: tuple[WardenServer, str]
) -> None:
    server, database_url = loaded_server
    result = kill_server_under_load("kill -9", server, database_url, PLAN)
    total = PLAN.agents * PLAN.events_per_agent
    # The kill came mid-run and was felt: some events were in, uploads then failed.
    assert 0 < result.acknowledged_before_fault < total
    assert result.tally.unanswered > 0
    assert_delivered_exactly_once(result, server)


@pytest.fixture
def postgres_server(tmp_path: Path) -> Iterator[tuple[WardenServer, str, str]]:
    cluster = base_url()
    if cluster is None:
        pytest.skip("the PostgreSQL restart test needs WARDEN_TEST_DATABASE_URL")
    if not can_control_cluster():
        pytest.skip("the PostgreSQL restart test needs pg_ctlcluster and a local cluster")
    with fresh_database(cluster) as url:
        server = WardenServer(tmp_path / "server", tmp_path / "server.log",
                              env={"WARDEN_DATABASE_URL": url})
        with running(server):
            yield server, url, cluster


@pytest.mark.exclusive
def test_postgres_restart_under_load_answers_503_then_recovers_by_itself(
    postgres_server: tuple[WardenServer, str, str]
) -> None:
    server, database_url, cluster = postgres_server
    result = database_outage_under_load("PostgreSQL restart", server, database_url, cluster,
                                        PLAN)
    assert result.health_during_outage is not None
    status, body = result.health_during_outage
    assert status == 503 and body["error"]["code"] == "database_unavailable"
    # Meanwhile: 503 with Retry-After and the JSON error (`malformed` is empty), never 500.
    assert result.tally.statuses[503] > 0
    # Afterwards: the same process serves again; nobody restarted it.
    assert result.same_server_process
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert_delivered_exactly_once(result, server)


# -- the agent's own disk ------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own: it can be filled or made read-only without harm."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs to mount a tmpfs (root with CAP_SYS_ADMIN): {mounted.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(mount_point: Path) -> Path:
    """Write zeros until the file system refuses: ENOSPC."""
    filler = mount_point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(65536))
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return filler


def remount(mount_point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


# How to break the state disk, and how to repair it.
FAULTS: dict[str, tuple[Callable[[Path], object], Callable[[Path], None]]] = {
    "full disk": (fill, lambda mount: (mount / "filler").unlink()),
    "read-only": (lambda mount: remount(mount, "ro"), lambda mount: remount(mount, "rw")),
}


@pytest.fixture
def disk_agent(tmp_path: Path, server: WardenServer, small_fs: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(server, small_fs / "state", tmp_path / "bin", tmp_path / "agent.log")
    try:
        yield agent
    finally:
        if agent.process is not None:
            agent.stop(signal.SIGKILL)


def finding_for(server: WardenServer, pid: int) -> dict[str, Any] | None:
    for item in server.findings(app="telegram", sensor="process"):
        if item["evidence"].get("pid") == pid:
            return item
    return None


def exit_code(agent: AgentProcess, timeout: float) -> int:
    """Wait for the agent to exit by itself; the code."""
    process = agent.process
    assert process is not None
    wait_for(lambda: process.poll() is not None, timeout, "the agent to exit")
    agent.process = None  # nothing left to stop
    return process.returncode


@pytest.mark.parametrize("fault", list(FAULTS))
def test_agent_on_a_broken_state_disk_says_so_and_keeps_its_backlog(
    fault: str, server: WardenServer, disk_agent: AgentProcess, small_fs: Path,
    fake: FakeProcesses
) -> None:
    break_disk, repair_disk = FAULTS[fault]
    agent = disk_agent
    agent.start()
    first = fake.start("telegram-desktop")
    wait_for(lambda: finding_for(server, first.pid), SYNC, "the first finding on the server")
    # The server goes away: the next detection waits in the agent's spool.
    server.stop()
    second = fake.start("Telegram")
    wait_for(lambda: agent.status().get("spool_depth"), SYNC, "the second finding spooled")
    assert agent.stop() == 0

    break_disk(small_fs)
    log_before = agent.log.read_text()
    agent.start()
    code = exit_code(agent, 30)
    output = agent.log.read_text()[len(log_before):]
    # One clear line, the documented failure code, no traceback; and it stopped by
    # itself instead of spinning (a service manager decides when to try again).
    assert code == 1, output
    assert "cannot start" in output and "spool" in output, output
    assert output.count("cannot start") == 1, output
    assert "Traceback" not in output, output

    repair_disk(small_fs)
    server.start()
    agent.start()
    late = wait_for(lambda: finding_for(server, second.pid), SYNC,
                    "the spooled finding delivered after the repair")
    wait_for(lambda: agent.status().get("spool_depth") == 0, SYNC, "an empty spool")
    # Exactly once: one finding per process, each opened by one event; same agent.
    early = finding_for(server, first.pid)
    assert early is not None and early["id"] != late["id"]
    for finding in (early, late):
        events = server.api(f"findings/{finding['id']}")["events"]
        assert [event["type"] for event in events].count("finding_opened") == 1, events
    assert len(server.api("agents")["items"]) == 1


def checked_in_since(server: WardenServer, since: dt.datetime) -> bool:
    """The (only) agent's last check-in is later than `since`."""
    agents = server.api("agents")["items"]
    return bool(agents) and dt.datetime.fromisoformat(agents[0]["last_seen"]) > since


def test_agent_whose_disk_fills_while_running_holds_events_and_keeps_checking_in(
    server: WardenServer, disk_agent: AgentProcess, small_fs: Path, fake: FakeProcesses
) -> None:
    agent = disk_agent
    agent.start()
    first = fake.start("telegram-desktop")
    wait_for(lambda: finding_for(server, first.pid), SYNC, "the first finding on the server")
    filler = fill(small_fs)
    filled_at = dt.datetime.now(dt.UTC)
    second = fake.start("Telegram")
    wait_for(lambda: "cannot write to the event spool" in agent.log.read_text(), SYNC,
             "the agent to report that it cannot spool")
    # Still in touch while the disk is full: a check-in (every 5 s here) lands.
    wait_for(lambda: checked_in_since(server, filled_at), CHECKINS,
             "a check-in while the disk is full")
    filler.unlink()
    # The detection made while the disk was full is held, then spooled and delivered.
    wait_for(lambda: finding_for(server, second.pid), SYNC, "the second finding on the server")
    log = agent.log.read_text()
    assert agent.process is not None and agent.process.poll() is None, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    # Said once when it starts failing, once when it recovers: not once per event.
    assert log.count("cannot write to the event spool") == 1, log[-3000:]
    assert "writable again" in log, log[-3000:]
    assert agent.stop() == 0
