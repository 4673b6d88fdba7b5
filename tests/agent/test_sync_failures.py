"""A sync attempt that fails is recorded where `warden-agent status` reads it, every time,
even before the agent ever checked in (the status file used to be written only by a
successful check-in, so an agent that could not enroll showed no reason at all)."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.state import StateDir
from agent.uplink.client import AgentClient, RetryLater
from agent.uplink.sync import PolicySync, SyncStatus


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What agent.host.machine.host_facts gives: the agent checks them against the wire format
# before it sends them.
FACTS = {"hostname": "test", "machine_id": "m-test", "os": "linux", "os_version": "Debian 12",
         "arch": "x86_64", "agent_version": "0.1.0", "user": "alice"}


def make_sync(tmp_path: Path, url: str, failures: list[str], status: SyncStatus,
              secret: str | None = "wen_test") -> PolicySync:
    def record() -> None:
        failures.append(status.last_error or "")

    def refuse_bundle(bundle: dict[str, Any]) -> None:
        raise AssertionError("no policy can arrive from a server that is not there")

    return PolicySync(AgentClient(url, timeout=5), StateDir(tmp_path / "state"),
                      facts=lambda: dict(FACTS), enroll_secret=lambda: secret,
                      apply_bundle=refuse_bundle, agent_status=dict, status=status,
                      on_failure=record)


def test_an_unreachable_server_is_reported_after_each_attempt(tmp_path: Path) -> None:
    failures: list[str] = []
    status = SyncStatus()
    sync = make_sync(tmp_path, f"http://127.0.0.1:{closed_port()}", failures, status)
    delays = [sync._attempt() for _ in range(2)]
    assert len(failures) == 2
    assert "POST" in failures[0] and "/api/v1/agent/enroll" in failures[0]
    assert status.enrolled is False and sync.state.load_identity() is None
    assert all(delay > 0 for delay in delays), "failures back off"


def test_a_missing_secret_is_reported_too(tmp_path: Path) -> None:
    failures: list[str] = []
    status = SyncStatus()
    sync = make_sync(tmp_path, f"http://127.0.0.1:{closed_port()}", failures, status,
                     secret=None)
    sync._attempt()
    assert failures == [status.last_error]
    assert "WARDEN_AGENT_ENROLL_SECRET" in failures[0]


def test_a_failing_report_does_not_end_the_sync_thread(tmp_path: Path) -> None:
    calls: list[int] = []

    def disk_full() -> None:
        calls.append(1)
        raise OSError(28, "No space left on device")

    status = SyncStatus()
    sync = PolicySync(AgentClient(f"http://127.0.0.1:{closed_port()}", timeout=5),
                      StateDir(tmp_path / "state"), facts=lambda: {}, enroll_secret=lambda: "x",
                      apply_bundle=lambda bundle: None, agent_status=dict, status=status,
                      on_failure=disk_full)
    # What the thread's loop runs: a failure to record the failure is logged, not raised.
    assert sync._attempt() > 0
    assert sync._attempt() > 0
    assert len(calls) == 2 and status.last_error


def test_a_captive_portal_answering_200_is_retried_later(tmp_path: Path) -> None:
    """A hotel or airport network answers every request with its own login page."""

    class Portal(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            page = b"<html><body>Please accept the terms of use</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    portal = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    thread = threading.Thread(target=portal.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        failures: list[str] = []
        status = SyncStatus()
        url = f"http://127.0.0.1:{portal.server_address[1]}"
        sync = make_sync(tmp_path, url, failures, status)
        assert sync._attempt() > 0
        assert "200 but not Warden's answer" in failures[0]
        assert sync.state.load_identity() is None
        with pytest.raises(RetryLater, match="not Warden's answer"):
            AgentClient(url, timeout=5).post_events("token", [{"id": "e1"}])
    finally:
        portal.shutdown()
        portal.server_close()


def test_an_unexpected_error_does_not_end_the_sync_thread(tmp_path: Path) -> None:
    failures: list[str] = []
    status = SyncStatus()
    sync = make_sync(tmp_path, f"http://127.0.0.1:{closed_port()}", failures, status)
    stop = threading.Event()
    calls: list[int] = []

    def attempt() -> float:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug nobody foresaw")
        stop.set()
        return 0.0

    sync._attempt = attempt  # type: ignore[method-assign]
    sync._backoff.next_delay = lambda seconds=None: 0.01  # type: ignore[method-assign]
    thread = threading.Thread(target=sync.run, args=(stop,))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(calls) == 2
    assert failures == ["a bug nobody foresaw"]
