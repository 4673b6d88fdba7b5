"""The Windows service host runs the real agent against a real server, start to stop.

The service host (`agent.service.windows.main`) runs in its own process, as python.exe
does under the SCM; only advapi32 is the stand-in of tests/agent/fake_scm.py,
driven over the process's standard input and output (tests/e2e/scm_host.py).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.service.windows import (
    NO_ERROR,
    SERVICE_CONTROL_STOP,
    SERVICE_RUNNING,
    SERVICE_START_PENDING,
    SERVICE_STOP_PENDING,
    SERVICE_STOPPED,
)
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer
from tests.e2e.test_agent_service import SYNC, finding_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


class ServiceHost:
    """The host process, and what it reported, read as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.scm_host"], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.records: list[dict[str, int]] = []
        self._incoming: queue.Queue[dict[str, int] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self._incoming.put(json.loads(line))
        self._incoming.put(None)

    def wait_for(self, key: str, value: int, timeout: float = 60.0) -> dict[str, int]:
        while True:
            record = self._incoming.get(timeout=timeout)
            assert record is not None, f"the host exited before reporting {key}={value}"
            self.records.append(record)
            if record.get(key) == value:
                return record

    def send(self, control: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{control}\n")
        self.process.stdin.flush()

    def states(self) -> list[int]:
        return [record["state"] for record in self.records if "state" in record]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def test_the_service_host_runs_the_agent_and_stops_it_cleanly(
    server: WardenServer, make_agent: Any, fake: FakeProcesses, tmp_path: Path
) -> None:
    agent: AgentProcess = make_agent()  # its settings and `status`; the host runs the agent
    log_file = tmp_path / "ProgramData" / "Warden" / "logs" / "agent.log"
    host = ServiceHost({**agent.env, "WARDEN_AGENT_LOG_FILE": str(log_file)})
    try:
        running = host.wait_for("state", SERVICE_RUNNING)
        assert running["controls_accepted"] != 0
        wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")

        telegram = fake.start("telegram-desktop")
        wait_for(lambda: finding_for(server, telegram.pid, status="open"), SYNC,
                 "the service's agent to report the fake Telegram")
        fake.stop(telegram)
        wait_for(lambda: finding_for(server, telegram.pid, status="resolved"), SYNC,
                 "the finding resolved")
        # Whatever else the agent noticed meanwhile is sent too: a stop leaves unsent events
        # in the spool for the next start rather than waiting on the server.
        wait_for(lambda: agent.status().get("spool_depth") == 0, SYNC, "an empty spool")

        host.send(SERVICE_CONTROL_STOP)
        assert host.wait_for("control", SERVICE_CONTROL_STOP)["answer"] == NO_ERROR
        stopped = host.wait_for("state", SERVICE_STOPPED)
        assert host.process.wait(timeout=60) == 0
    finally:
        host.kill()
    states = host.states()
    assert states[:2] == [SERVICE_START_PENDING, SERVICE_RUNNING]
    assert states[-1] == SERVICE_STOPPED and set(states[2:-1]) == {SERVICE_STOP_PENDING}
    assert (stopped["win32_exit_code"], stopped["service_exit_code"]) == (NO_ERROR, 0)
    # With no console, the log file is where an administrator looks.
    log = log_file.read_text(encoding="utf-8")
    assert "asks the agent to stop" in log and "service stopped with exit code 0" in log
    # Stopped with nothing left behind, and nothing torn: the spool still reads, empty.
    assert agent.status()["spool_depth"] == 0


def test_bad_settings_reach_the_scm_as_exit_code_2_and_the_log_says_why(
    make_agent: Any, tmp_path: Path
) -> None:
    agent: AgentProcess = make_agent()
    log_file = tmp_path / "agent.log"
    host = ServiceHost({**agent.env, "WARDEN_AGENT_LOG_FILE": str(log_file),
                        "WARDEN_AGENT_PROCESS_INTERVAL": "-1"})
    try:
        stopped = host.wait_for("state", SERVICE_STOPPED)
        assert host.process.wait(timeout=60) == 2
    finally:
        host.kill()
    assert host.states() == [SERVICE_START_PENDING, SERVICE_STOPPED]
    assert stopped["service_exit_code"] == 2
    assert "process_interval (WARDEN_AGENT_PROCESS_INTERVAL" in log_file.read_text()
