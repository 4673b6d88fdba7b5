"""Alerts reach a real local HTTP receiver and real local syslog sockets."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from server.alerts import AlertDispatcher, format_rfc5424, slack_text, summary_text
from server.alerts.webhook import parse_retry_after

FINDING: dict[str, Any] = {
    "id": "f-1",
    "agent_id": "a-1",
    "host": "pc-7",
    "app": "telegram",
    "app_name": "Telegram",
    "sensor": "process",
    "verdict": "deny",
    "action": "notify",
    "evidence": {"pid": 123, "name": "telegram-desktop", "exe": "/usr/bin/telegram-desktop"},
    "alternative": "signal",
    "first_seen": "2025-01-01T00:00:00Z",
    "message": "Telegram is not allowed on official devices.",
}
Made = list[AlertDispatcher]  # dispatchers a test made; the fixture stops them
SUMMARY = "Telegram (deny) on host pc-7: process telegram-desktop pid 123 — use Signal instead"

RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-|\[(?:[^\]\\]|\\.)*\]) (?P<msg>.*)$",
    re.DOTALL,
)
SD_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
BOM = b"\xef\xbb\xbf"


def parse_syslog(data: bytes) -> dict[str, Any]:
    match = RFC5424.match(data)
    assert match, f"not an RFC 5424 message: {data!r}"
    sd = match["sd"].decode()
    assert sd.startswith("[warden@32473 ")
    params = {name: re.sub(r"\\(.)", r"\1", value) for name, value in SD_PARAM.findall(sd)}
    assert match["msg"].startswith(BOM)
    return {"pri": int(match["pri"]), "timestamp": dt.datetime.fromisoformat(
        match["timestamp"].decode()), "hostname": match["hostname"].decode(),
        "app": match["app"].decode(), "procid": match["procid"].decode(),
        "msgid": match["msgid"].decode(), "params": params,
        "msg": match["msg"][len(BOM):].decode()}


class Receiver:
    """A webhook receiver: answers `statuses` in turn (the last one repeats)."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None,
                 hold: threading.Event | None = None) -> None:
        self.statuses = statuses
        self.headers = headers or {}
        self.hold = hold
        self.requests: list[dict[str, Any]] = []
        self.entered = threading.Event()
        self.finished = 0
        self.changed = threading.Condition()

    def wait_for(self, count: int, timeout: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.requests) >= count, timeout)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(receiver: Receiver) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.changed:
                    index = len(receiver.requests)
                    receiver.requests.append({"path": self.path, "json": json.loads(body),
                                              "content_type": self.headers["Content-Type"]})
                    receiver.changed.notify_all()
                if receiver.hold is not None:
                    receiver.entered.set()
                    receiver.hold.wait(10)
                status = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver.changed:
                    receiver.finished += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/hook"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def dispatchers() -> Iterator[Made]:
    made: list[AlertDispatcher] = []
    yield made
    for dispatcher in made:
        assert dispatcher.stop(10)


def test_webhook_receives_slack_text_and_the_finding(serve: Any, dispatchers: Made) -> None:
    receiver = Receiver([200])
    outcomes: list[tuple[str, str]] = []
    dispatcher = AlertDispatcher(serve(receiver), None, on_outcome=lambda *o: outcomes.append(o))
    dispatchers.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert dispatcher.flush(10)
    [request] = receiver.requests
    assert request["path"] == "/hook"
    assert request["content_type"] == "application/json"
    assert request["json"]["text"] == f":no_entry: {SUMMARY}"
    assert request["json"]["finding"] == FINDING
    assert (dispatcher.delivered, dispatcher.failed, dispatcher.dropped) == (1, 0, 0)
    assert outcomes == [("webhook", "delivered")]


def test_webhook_sends_datetimes_as_text(serve: Any, dispatchers: Made) -> None:
    receiver = Receiver([200])
    dispatcher = AlertDispatcher(serve(receiver), None)
    dispatchers.append(dispatcher)
    dispatcher.start()
    seen = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    dispatcher.submit({**FINDING, "first_seen": seen})
    assert dispatcher.flush(10)
    assert receiver.requests[0]["json"]["finding"]["first_seen"] == str(seen)
    assert dispatcher.delivered == 1


def test_webhook_retries_503_until_it_is_accepted(serve: Any, dispatchers: Made) -> None:
    receiver = Receiver([503, 503, 200])
    dispatcher = AlertDispatcher(serve(receiver), None, backoff_base=0.001)
    dispatchers.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert dispatcher.flush(10)
    assert len(receiver.requests) == 3
    assert all(r["json"]["finding"]["id"] == "f-1" for r in receiver.requests)
    assert (dispatcher.delivered, dispatcher.failed) == (1, 0)


def test_webhook_honours_retry_after(serve: Any, dispatchers: Made) -> None:
    receiver = Receiver([429, 200], headers={"Retry-After": "7"})
    delays: list[float] = []
    dispatcher = AlertDispatcher(serve(receiver), None, backoff_base=0.001, sleep=delays.append)
    dispatchers.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert dispatcher.flush(10)
    assert delays == [7.0]
    assert dispatcher.delivered == 1


def test_retries_stop_when_the_retry_budget_is_spent(serve: Any, dispatchers: Made) -> None:
    receiver = Receiver([503])
    now = [0.0]
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        now[0] += seconds

    dispatcher = AlertDispatcher(serve(receiver), None, retry_max_seconds=10, backoff_base=1,
                                 clock=lambda: now[0], sleep=sleep)
    dispatchers.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert dispatcher.flush(10)
    assert (dispatcher.delivered, dispatcher.failed) == (0, 1)
    assert len(delays) >= 2
    assert sum(delays) <= 10
    assert len(receiver.requests) == len(delays) + 1
    # Exponential: each wait is longer than the one before.
    assert delays == sorted(delays)


def test_a_client_error_is_not_retried(serve: Any, dispatchers: Made) -> None:
    receiver = Receiver([400])
    dispatcher = AlertDispatcher(serve(receiver), None, backoff_base=0.001)
    dispatchers.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert dispatcher.flush(10)
    assert len(receiver.requests) == 1
    assert (dispatcher.delivered, dispatcher.failed) == (0, 1)


def test_connection_refused_is_retried_then_fails(dispatchers: Made) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    now = [0.0]
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        now[0] += seconds

    dispatcher = AlertDispatcher(f"http://127.0.0.1:{port}/hook", None, retry_max_seconds=5,
                                 clock=lambda: now[0], sleep=sleep)
    dispatchers.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert dispatcher.flush(10)
    assert delays
    assert dispatcher.failed == 1


def test_submit_returns_while_the_receiver_hangs(serve: Any, dispatchers: Made) -> None:
    hold = threading.Event()
    receiver = Receiver([200], hold=hold)
    dispatcher = AlertDispatcher(serve(receiver), None)
    dispatchers.append(dispatcher)
    dispatcher.start()
    try:
        dispatcher.submit(FINDING)
        assert receiver.entered.wait(10)
        # The worker is stuck inside the first POST; the next submit still returns.
        dispatcher.submit({**FINDING, "id": "f-2"})
        assert not hold.is_set()
        assert receiver.finished == 0
        assert dispatcher.delivered == 0
    finally:
        hold.set()
    assert dispatcher.flush(10)
    assert [r["json"]["finding"]["id"] for r in receiver.requests] == ["f-1", "f-2"]
    assert dispatcher.delivered == 2


def test_a_full_queue_drops_and_counts(dispatchers: Made) -> None:
    outcomes: list[tuple[str, str]] = []
    # Not started: nothing drains the queue, so its one slot stays taken.
    dispatcher = AlertDispatcher("http://127.0.0.1:9/hook", None, queue_size=1,
                                 on_outcome=lambda *o: outcomes.append(o))
    dispatchers.append(dispatcher)
    for number in range(3):
        dispatcher.submit({**FINDING, "id": f"f-{number}"})
    assert dispatcher.dropped == 2
    assert outcomes == [("webhook", "dropped"), ("webhook", "dropped")]
    assert not dispatcher.flush(0)
    # Stopping a dispatcher that never ran loses the queued alert too, and says so.
    assert dispatcher.stop(10)
    assert dispatcher.dropped == 3
    assert dispatcher.flush(0)


def test_submit_after_stop_is_dropped() -> None:
    dispatcher = AlertDispatcher("http://127.0.0.1:9/hook", None)
    assert dispatcher.stop(10)
    dispatcher.submit(FINDING)
    assert dispatcher.dropped == 1


def test_no_destination_means_nothing_to_do() -> None:
    dispatcher = AlertDispatcher(None, None)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert not dispatcher.enabled
    assert dispatcher.flush(0)
    assert dispatcher.stop(1)
    assert (dispatcher.delivered, dispatcher.dropped) == (0, 0)


def _assert_syslog_line(data: bytes) -> None:
    message = parse_syslog(data)
    assert message["pri"] == 16 * 8 + 4  # local0.warning
    assert message["timestamp"].tzinfo is not None
    assert message["hostname"] == "warden-test"
    assert (message["app"], message["procid"], message["msgid"]) == ("warden", "-", "deny-finding")
    assert message["params"] == {"app": "telegram", "host": "pc-7", "sensor": "process",
                                 "verdict": "deny", "finding_id": "f-1", "agent_id": "a-1"}
    assert message["msg"] == SUMMARY


def test_syslog_over_udp(dispatchers: Made) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        dispatcher = AlertDispatcher(None, f"udp://127.0.0.1:{port}", hostname="warden-test")
        dispatchers.append(dispatcher)
        dispatcher.start()
        dispatcher.submit(FINDING)
        _assert_syslog_line(sock.recv(65536))
    assert dispatcher.flush(10)
    assert dispatcher.delivered == 1


def test_syslog_over_a_unix_datagram_socket(tmp_path: Path, dispatchers: Made) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        dispatcher = AlertDispatcher(None, f"unix://{path}", hostname="warden-test")
        dispatchers.append(dispatcher)
        dispatcher.start()
        dispatcher.submit(FINDING)
        _assert_syslog_line(sock.recv(65536))
    assert dispatcher.flush(10)
    assert dispatcher.delivered == 1


def test_syslog_over_tcp_uses_octet_counting(dispatchers: Made) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        dispatcher = AlertDispatcher(None, f"tcp://127.0.0.1:{port}", hostname="warden-test")
        dispatchers.append(dispatcher)
        dispatcher.start()
        dispatcher.submit(FINDING)
        connection, _ = server.accept()
        with connection:
            connection.settimeout(10)
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
    length, _, message = received.partition(b" ")
    assert int(length) == len(message)
    _assert_syslog_line(message)


def test_syslog_socket_missing_is_retried_then_fails(tmp_path: Path, dispatchers: Made) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    dispatcher = AlertDispatcher(None, f"unix://{tmp_path / 'absent'}", retry_max_seconds=3,
                                 clock=lambda: now[0], sleep=sleep)
    dispatchers.append(dispatcher)
    dispatcher.start()
    dispatcher.submit(FINDING)
    assert dispatcher.flush(10)
    assert now[0] > 0
    assert dispatcher.failed == 1


def test_rfc5424_escapes_structured_data_and_fits_a_datagram() -> None:
    finding = {**FINDING, "host": 'pc "7" [lab]\\x'}
    text = "Telegram — " + "ü" * 3000
    stamp = dt.datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=dt.UTC)
    data = format_rfc5424(finding, text, "my host", stamp, max_bytes=2048)
    assert len(data) <= 2048
    message = parse_syslog(data)
    assert message["hostname"] == "myhost"
    assert message["timestamp"] == stamp
    assert data.startswith(b"<132>1 2025-03-04T05:06:07.890000Z myhost warden - deny-finding [")
    assert message["params"]["host"] == 'pc "7" [lab]\\x'
    assert message["msg"].startswith("Telegram — üü")


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        # A process: its name and pid.
        (FINDING, SUMMARY),
        # An installed package: where it was found and its id.
        ({**FINDING, "sensor": "installed", "evidence": {"source": "snap",
                                                         "id": "telegram-desktop"}},
         "Telegram (deny) on host pc-7: installed snap telegram-desktop — use Signal instead"),
        # A portable folder: its path, not an id.
        ({**FINDING, "sensor": "installed", "alternative": None,
          "evidence": {"source": "folder", "id": "x", "path": "/home/a/Telegram"}},
         "Telegram (deny) on host pc-7: installed folder /home/a/Telegram"),
        # A connection: the remote end and which process made it.
        ({**FINDING, "sensor": "network", "evidence": {
            "remote_address": "149.154.167.51:443", "remote_host": None,
            "process_name": "Telegram", "pid": 9}},
         "Telegram (deny) on host pc-7: connection to 149.154.167.51:443 by process Telegram "
         "pid 9 — use Signal instead"),
    ],
)
def test_summary_text(finding: dict[str, Any], expected: str) -> None:
    assert summary_text(finding) == expected


def test_slack_text_escapes_and_names_the_alternative() -> None:
    finding = {**FINDING, "host": "<pc&7>"}
    assert slack_text(finding, {"signal": "Signal Messenger"}) == (
        ":no_entry: Telegram (deny) on host &lt;pc&amp;7&gt;: process telegram-desktop pid 123"
        " — use Signal Messenger instead")


def test_parse_retry_after() -> None:
    now = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize("address", ["syslog.example:514", "udp://", "unix://", "udp://h:99999"])
def test_bad_syslog_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="syslog address"):
        AlertDispatcher(None, address)


def test_bad_webhook_url_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook URL"):
        AlertDispatcher("ftp://example/hook", None)
