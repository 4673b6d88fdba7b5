"""Exceptions end to end: a real `warden server run`, a real agent daemon (in this process,
so its clock can be driven), a real Telegram stand-in, a real Unix socket and a real
ordinary user asking for an exception with `warden-agent request-exception`."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import AgentDaemon
from agent.responding.notify import RecordingNotifier
from agent.settings import load_settings
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import WardenServer
from tests.unprivileged import Unprivileged

DEADLINE = 90.0  # generous: a loaded CI machine checks in late


class Clock:
    """The agent's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def quick_server(server: WardenServer) -> WardenServer:
    return server  # check-ins every 5 s (the harness's setting, the server's least)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Not under pytest's tmp folder, which only root may enter: an ordinary user connects.
    root = Path(tempfile.mkdtemp(prefix="warden-requests-"))
    root.chmod(0o755)
    try:
        yield root / "run"
    finally:
        shutil.rmtree(root)


class RunningAgent:
    def __init__(self, daemon: AgentDaemon, notifier: RecordingNotifier, clock: Clock) -> None:
        self.daemon, self.notifier, self.clock = daemon, notifier, clock
        self.thread = threading.Thread(target=daemon.run, daemon=True)

    def finding(self, pid: int) -> Any:
        """The agent's open finding for that process, if any."""
        found = [finding for finding in self.daemon.watch.tracker.open_findings("process")
                 if finding.evidence.get("pid") == pid]
        return found[0] if found else None

    def titles(self) -> list[str]:
        return [notice.title for notice in self.notifier.notices]


@pytest.fixture
def running_agent(tmp_path: Path, quick_server: WardenServer, socket_dir: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningAgent]:
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(tmp_path / "none.toml"))
    settings = load_settings(server_url=quick_server.url,
                             enroll_secret=quick_server.enroll_secret,
                             state_dir=tmp_path / "agent", installed=False, network=False,
                             notify_cooldown=0, checkin_interval=1,
                             request_socket=socket_dir / "request.sock")
    notifier, clock = RecordingNotifier(), Clock()
    agent = RunningAgent(AgentDaemon(settings, notifier=notifier, clock=clock), notifier,
                         clock)
    agent.thread.start()
    try:
        wait_for(lambda: agent.daemon.status.enrolled and agent.daemon.status.policy_version,
                 DEADLINE, "the agent enrolled and took the server's policy")
        yield agent
    finally:
        agent.daemon.stop()
        agent.thread.join(15)


def _grant(server: WardenServer, agent_id: str, days: float) -> dict[str, Any]:
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    answer: dict[str, Any] = server.api("exceptions", "POST", json={
        "app": "telegram", "host": agent_id, "until": until.isoformat(),
        "reason": "press office"})
    return answer


def test_an_exception_is_honoured_warned_about_and_lapses_by_the_agents_clock_offline(
        running_agent: RunningAgent, quick_server: WardenServer, fake: FakeProcesses) -> None:
    agent = running_agent
    telegram = fake.start("telegram-desktop")
    first = wait_for(lambda: agent.finding(telegram.pid), DEADLINE, "the deny finding")
    assert (first.verdict, first.action) == ("deny", "notify")
    agent_id = agent.daemon.status.agent_id
    assert agent_id is not None

    granted = _grant(quick_server, agent_id, days=3)
    excepted = wait_for(lambda: (f := agent.finding(telegram.pid)) and f.verdict == "excepted"
                        and f, DEADLINE, "the finding excepted after the next check-in")
    assert excepted.action == "report"  # seen and said, never acted on
    # The server shows it as excepted too.
    wait_for(lambda: [f for f in quick_server.findings(app="telegram")
                      if f["evidence"].get("pid") == telegram.pid
                      and f["verdict"] == "excepted"], DEADLINE, "the server's excepted finding")
    assert telegram.poll() is None

    # A day before it lapses, by the agent's clock: the person is told.
    until = dt.datetime.fromisoformat(granted["until"])
    agent.clock.now = until - dt.timedelta(hours=12)
    agent.daemon.exceptions.wake()
    wait_for(lambda: "Your exception for Telegram ends soon" in agent.titles(), DEADLINE,
             "the warning a day before")

    # The server goes away; the agent's clock passes `until`: the ban applies again.
    quick_server.stop()
    agent.clock.now = until + dt.timedelta(seconds=1)
    agent.daemon.exceptions.wake()
    again = wait_for(lambda: (f := agent.finding(telegram.pid)) and f.verdict == "deny" and f,
                     DEADLINE, "the deny finding again, with the server unreachable")
    assert again.action == "notify"


def test_a_person_asks_over_the_socket_and_is_told_the_answer(
        running_agent: RunningAgent, quick_server: WardenServer,
        unprivileged: Unprivileged, socket_dir: Path) -> None:
    agent = running_agent
    asked = unprivileged.run(
        "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))",
        "request-exception", "--app", "telegram", "--days", "30",
        "--reason", "I run the press channel", "--socket", str(socket_dir / "request.sock"))
    assert asked.returncode == 0, asked.stderr
    assert "sent" in asked.stdout

    def pending() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = quick_server.api(
            "exception-requests", params={"status": "pending"})["items"]
        return items

    [request] = wait_for(pending, DEADLINE, "the request pending on the server")
    assert (request["app"], request["days"], request["requested_by"]) == \
        ("telegram", 30, "nobody")
    assert request["agent_id"] == agent.daemon.status.agent_id

    refused = unprivileged.run(
        "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))",
        "request-exception", "--app", "no-such-app", "--days", "30", "--reason", "x",
        "--socket", str(socket_dir / "request.sock"))
    assert refused.returncode == 2 and "unknown app" in refused.stderr

    quick_server.api(f"exception-requests/{request['id']}/approve", "POST",
                     json={"days": 14})
    wait_for(lambda: "Telegram is allowed on this computer" in agent.titles(), DEADLINE,
             "the person told of the approval")
    assert agent.daemon.exceptions.granted() == frozenset({"telegram"})
    audit = quick_server.api("audit", params={"action": "exception*"})["items"]
    assert {entry["action"] for entry in audit} >= {"exception_request.create",
                                                     "exception_request.approve"}
