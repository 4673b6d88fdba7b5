"""A real agent with a sensor stuck in a system call: it detects, says so everywhere, and stops.

A real `warden server run` (alerting to a webhook on loopback) and the agent
daemon as `warden-agent run` runs it, with its installed-apps scan blocked for
good in open(2) of a FIFO (tests/e2e/stuck_agent.py). A process named
`telegram-desktop` still reaches the server; the stall shows in `warden-agent
status`, the check-in status, the host page and one alert; SIGTERM stops the
agent within 10 s with its spool intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from agent.state import StateDir
from agent.uplink.spool import Spool
from tests.agent.conftest import FakeProcesses, wait_for
from tests.agent.stuck_sensors import make_fifo
from tests.e2e.conftest import AgentProcess, WardenServer
from tests.server.dashboard_support import csrf_of

WAIT = 60.0


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads what was received, not the access log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def sensor_alerts(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts about the installed-apps sensor, the one this test makes stall. (In a test
    worker's own PID namespace the kernel sends no process events, so the exec-events
    sensor rightly raises one of its own there.)"""
    return [item["sensor_alert"] for item in list(received)
            if "sensor_alert" in item and item["sensor_alert"]["sensor"] == "installed"]


def host_page(server: WardenServer, agent_id: str) -> str:
    browser = requests.Session()
    login = browser.get(f"{server.url}/login", timeout=10)
    answer = browser.post(f"{server.url}/login", timeout=10, allow_redirects=False, data={
        "csrf_token": csrf_of(login.text), "method": "token", "token": server.admin_token,
        "next": "/"})
    assert answer.status_code == 303, answer.text
    page = browser.get(f"{server.url}/hosts/{agent_id}", timeout=10)
    assert page.status_code == 200
    return page.text


def test_a_stuck_sensor_is_seen_everywhere_and_sigterm_still_stops_the_agent(
    tmp_path: Path, fake: FakeProcesses,
) -> None:
    with webhook_receiver() as (hook, received):
        server = WardenServer(tmp_path / "server", tmp_path / "server.log",
                              env={"WARDEN_ALERT_WEBHOOK_URL": hook})
        server.start()
        agent = AgentProcess(server, tmp_path / "agent", tmp_path / "bin",
                             tmp_path / "agent.log", SENSOR_DEADLINE="0.5",
                             LOG_LEVEL="DEBUG")
        agent.env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).parents[2]), agent.env.get("PYTHONPATH", "")])
        agent.command = [sys.executable, "-m", "tests.e2e.stuck_agent",
                         str(make_fifo(tmp_path / "stuck-fifo"))]
        try:
            agent.start()
            process = fake.start("telegram-desktop")
            wait_for(lambda: [f for f in server.findings(app="telegram", status="open")
                              if f["evidence"].get("pid") == process.pid], WAIT,
                     "the process finding on the server, with installed apps stuck")

            status = wait_for(lambda: (lambda s: s if s.get("sensors", {}).get(
                "installed", {}).get("state") == "stalled" else None)(agent.status()),
                WAIT, "`warden-agent status` to say installed: stalled")
            assert status["sensors"]["process"]["state"] == "ok"
            assert status["sensors"]["installed"]["last_ok"] is None

            (host,) = server.api("agents")["items"]
            checkin = wait_for(lambda: (lambda s: s if s.get("sensors", {}).get(
                "installed", {}).get("state") == "stalled" else None)(
                server.api(f"agents/{host['id']}")["status"] or {}),
                WAIT, "the check-in status to say installed: stalled")
            assert "past its 0.5 s deadline" in checkin["sensors"]["installed"]["detail"]
            page = host_page(server, host["id"])
            assert '<span class="badge sensor-stalled">stalled</span>' in page
            assert '<td>installed</td>' in page

            alerts = wait_for(lambda: sensor_alerts(received), WAIT, "the sensor alert")
            assert len(alerts) == 1, alerts
            (alert,) = alerts
            assert (alert["host"], alert["sensor"], alert["state"]) == (
                host["hostname"], "installed", "stalled")
            # Later check-ins, still stalled, raise no second alert.
            seen = server.api(f"agents/{host['id']}")["last_seen"]
            wait_for(lambda: server.api(f"agents/{host['id']}")["last_seen"] != seen, WAIT,
                     "another check-in")
            assert len(sensor_alerts(received)) == 1

            assert agent.process is not None
            started = time.monotonic()
            agent.process.send_signal(signal.SIGTERM)
            code = agent.process.wait(timeout=10)
            took = time.monotonic() - started
            agent.process = None
            assert code == 0, agent.log.read_text()[-3000:]
            log = agent.log.read_text()
            assert "stopping without the scanner thread" not in log  # the loop is not stuck
            assert "stopped;" in log, log[-3000:]
            print(f"SIGTERM to exit with a sensor stuck in open(2): {took:.2f} s")
        finally:
            if agent.process is not None:
                agent.stop(signal.SIGKILL)
            server.stop()
    # The spool was closed cleanly: whole, and it still knows what is open.
    spool_path = StateDir(agent.state_dir).spool_path
    with contextlib.closing(sqlite3.connect(spool_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    spool = Spool(spool_path)
    try:
        still_open = spool.open_findings()
        assert [f["app"] for f in still_open
                if f["evidence"].get("pid") == process.pid] == ["telegram"], still_open
    finally:
        spool.close()
