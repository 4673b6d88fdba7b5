"""SIEM delivery end to end: Splunk HEC (a stand-in written from Splunk's documented API),
ECS over HTTP, outages that lose nothing, a full queue, and destinations refused at start."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from server.app import create_app
from server.bootstrap import InitResult
from server.settings import ServerSettings
from server.siem.destinations import SiemDestination
from server.siem.outbox import Outbox
from server.siem.publisher import SiemPublisher
from server.siem.records import finding_record
from tests.server.siem_support import (
    RSYSLOGD,
    HecStandIn,
    free_port,
    serve_hec,
    start_rsyslog,
    wait_until,
)

EVENTS = "/api/v1/agent/events"
TOKEN = "3f1b8a52-5e0c-4c55-9c0e-1d2a3b4c5d6e"
NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


@pytest.fixture
def hec() -> Iterator[HecStandIn]:
    stand_in = HecStandIn(token=TOKEN)
    server, thread = serve_hec(stand_in)
    yield stand_in
    server.shutdown()
    server.server_close()
    thread.join(10)


def opened(key: str, verdict: str = "deny", app: str = "telegram") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "finding_opened", "time": NOW.isoformat(),
            "finding": {"key": key, "app": app, "verdict": verdict, "sensor": "process",
                        "action": "notify", "evidence": {"pid": 7, "name": "Telegram"}}}


@contextlib.contextmanager
def server_with(settings: ServerSettings, destinations: list[dict[str, Any]],
                secret: str, hostname: str = "pc-7") -> Iterator[tuple[TestClient, dict[str, str]]]:
    configured = [SiemDestination.model_validate(d) for d in destinations]
    app = create_app(settings.model_copy(update={"siem_destinations": configured}))
    with TestClient(app) as client:
        answer = client.post("/api/v1/agent/enroll",
                             json={"hostname": hostname, "machine_id": uuid.uuid4().hex,
                                   "os": "linux", "os_version": "Debian 12", "arch": "x86_64",
                                   "agent_version": "0.1.0", "user": "alice"},
                             headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 201, answer.text
        yield client, {"Authorization": f"Bearer {answer.json()['agent_token']}"}


def test_splunk_hec_gets_ecs_events_with_its_metadata_and_survives_an_outage(
    settings: ServerSettings, initialized: InitResult, hec: HecStandIn,
) -> None:
    destination = {"name": "splunk", "format": "hec", "address": hec.url, "token": TOKEN,
                   "index": "security", "streams": ["findings"]}
    with server_with(settings, [destination], initialized.enroll_secret) as (client, headers):
        batch = [opened("t1"), opened("s1", "allow", "signal")]
        assert client.post(EVENTS, json={"events": batch}, headers=headers).status_code == 200
        events = hec.wait_for(2)
        by_app = {event["event"]["rule"]["id"]: event for event in events}
        deny = by_app["telegram"]
        assert (deny["host"], deny["source"], deny["sourcetype"], deny["index"]) == (
            "pc-7", "warden", "_json", "security")
        assert deny["time"] == NOW.timestamp()
        assert deny["event"]["event"]["kind"] == "alert"
        assert by_app["signal"]["event"]["event"]["kind"] == "event"
        assert deny["event"]["host"]["name"] == "pc-7"

        # Splunk is busy (503): ingest still answers at once, and nothing is lost.
        hec.busy = True
        seen = hec.requests
        more = [opened(f"k{n}") for n in range(5)]
        assert client.post(EVENTS, json={"events": more}, headers=headers).status_code == 200
        wait_until(lambda: hec.requests >= seen + 2, what="HEC retries")
        assert len(hec.events) == 2
        hec.busy = False
        events = hec.wait_for(7)
        keys = [event["event"]["warden"]["finding"]["key"] for event in events[2:]]
        assert sorted(keys) == [f"k{n}" for n in range(5)]
        # The sender counts a delivery once HEC has answered, a moment after the stand-in
        # holds the events.
        delivered = 'warden_siem_records_total{destination="splunk",outcome="delivered"} 7.0'
        wait_until(lambda: delivered in client.get("/metrics").text, what="7 delivered")


def test_a_wrong_hec_token_is_counted_as_failed_not_retried_forever(
    settings: ServerSettings, initialized: InitResult, hec: HecStandIn,
) -> None:
    destination = {"name": "splunk", "format": "hec", "address": hec.url, "token": "wrong"}
    with server_with(settings, [destination], initialized.enroll_secret) as (client, headers):
        client.post(EVENTS, json={"events": [opened("t1")]}, headers=headers)
        wait_until(lambda: 'destination="splunk",outcome="failed"} 1.0'
                   in client.get("/metrics").text, what="the failure to be counted")
    assert hec.events == [] and hec.requests == 1


def test_ecs_over_http_posts_ndjson(
    settings: ServerSettings, initialized: InitResult,
) -> None:
    bodies: list[tuple[str, str, bytes]] = []
    arrived = threading.Condition()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with arrived:
                bodies.append((self.headers["Content-Type"], self.headers["Authorization"],
                               body))
                arrived.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/warden"
    destination = {"name": "logstash", "format": "ecs", "address": url, "token": "s3cret"}
    try:
        with server_with(settings, [destination], initialized.enroll_secret) as (client, h):
            client.post(EVENTS, json={"events": [opened("a"), opened("b")]}, headers=h)
            with arrived:
                assert arrived.wait_for(
                    lambda: sum(body.count(b"\n") for *_, body in bodies) >= 2, 20)
    finally:
        receiver.shutdown()
        receiver.server_close()
        thread.join(10)
    content_type, auth, _ = bodies[0]
    assert content_type == "application/x-ndjson" and auth == "Bearer s3cret"
    docs = [json.loads(line) for *_, body in bodies for line in body.splitlines()]
    assert sorted(doc["warden"]["finding"]["key"] for doc in docs) == ["a", "b"]


@pytest.mark.skipif(not os.access(RSYSLOGD, os.X_OK), reason="needs rsyslogd")
def test_records_wait_for_a_syslog_daemon_that_is_down(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM)
    destination = SiemDestination(name="qradar", format="cef", address=f"tcp://127.0.0.1:{port}")
    publisher = SiemPublisher([destination], "1.0", backoff_cap=0.5)
    _, outbox = publisher.outboxes["qradar"]
    publisher.start()
    try:
        for n in range(3):
            publisher.publish(_record(n))
        # Nobody listens: the worker keeps the records and keeps trying.
        wait_until(lambda: outbox.last_error is not None, what="a refused connection")
        assert outbox.queued == 3 and outbox.dropped == 0
        daemon = start_rsyslog(tmp_path / "rsyslog", tcp_port=port)
        rsyslog = next(daemon)
        try:
            received = rsyslog.wait_for(3)
        finally:
            daemon.close()
        assert sorted(m["msg"].split("externalId=")[1].split(" ")[0] for m in received) == [
            f"00000000-0000-0000-0000-00000000000{n}" for n in range(3)]
        assert outbox.delivered == 3 and outbox.last_error is None
    finally:
        assert publisher.stop(10)


def test_a_full_queue_drops_the_oldest_and_counts_it(hec: HecStandIn) -> None:
    hec.busy = True
    destination = SiemDestination(name="splunk", format="hec", address=hec.url, token=TOKEN,
                                  queue_size=3)
    outcomes: list[tuple[str, str, int]] = []
    publisher = SiemPublisher([destination], "1.0", backoff_cap=0.2,
                              on_outcome=lambda *o: outcomes.append(o))
    _, outbox = publisher.outboxes["splunk"]
    publisher.start()
    try:
        publisher.publish(_record(0))
        wait_until(lambda: hec.requests >= 1, what="the first attempt")
        # Record 0 is in flight; 1..5 wait in a queue of 3, so 1 and 2 make way.
        for n in range(1, 6):
            publisher.publish(_record(n))
        assert outbox.dropped == 2
        hec.busy = False
        events = hec.wait_for(4)
        ids = [event["event"]["event"]["id"] for event in events]
        assert ids == [f"00000000-0000-0000-0000-00000000000{n}" for n in (0, 3, 4, 5)]
        assert ("splunk", "dropped", 1) in outcomes
    finally:
        assert publisher.stop(10)


def test_stop_counts_what_a_dead_destination_never_got(hec: HecStandIn) -> None:
    hec.busy = True
    destination = SiemDestination(name="splunk", format="hec", address=hec.url, token=TOKEN)
    publisher = SiemPublisher([destination], "1.0", backoff_cap=0.2)
    _, outbox = publisher.outboxes["splunk"]
    publisher.start()
    for n in range(4):
        publisher.publish(_record(n))
    wait_until(lambda: hec.requests >= 1, what="an attempt")
    assert publisher.stop(10)
    assert (outbox.delivered, outbox.dropped) == (0, 4)
    publisher.publish(_record(9))
    assert outbox.dropped == 5


def _record(n: int) -> Any:
    finding = {"id": n, "agent_id": "a-1", "host": "pc-7", "app": "telegram", "key": f"k{n}",
               "sensor": "process", "verdict": "deny", "evidence": {"pid": n}}
    return finding_record("finding_opened", finding, f"00000000-0000-0000-0000-00000000000{n}",
                          NOW)


@pytest.mark.parametrize(("destination", "message"), [
    ({"name": "s", "format": "hec", "address": "https://splunk:8088"}, "needs `token`"),
    ({"name": "s", "format": "hec", "address": "udp://splunk:514", "token": "t"},
     "https:// URL"),
    ({"name": "q", "format": "cef", "address": "https://siem"}, "CEF goes over syslog"),
    ({"name": "q", "format": "cef", "address": "siem:514"}, "must start with udp://"),
    ({"name": "q", "format": "leef", "address": "udp://siem"}, "format"),
    ({"name": "q", "format": "cef", "address": "udp://siem", "streams": ["everything"]},
     "streams"),
    ({"name": "bad name", "format": "cef", "address": "udp://siem"}, "name"),
])
def test_a_bad_destination_is_refused_with_the_reason(
    tmp_path: Path, destination: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ServerSettings(data_dir=tmp_path, siem_destinations=[destination])


def test_destinations_come_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "warden.toml").write_text(
        '[[siem_destinations]]\nname = "qradar"\nformat = "cef"\n'
        'address = "tcp://10.0.0.5:514"\nstreams = ["alerts"]\n\n'
        '[[siem_destinations]]\nname = "splunk"\nformat = "hec"\n'
        'address = "https://splunk.example:8088"\ntoken = "abc"\n')
    settings = ServerSettings(data_dir=tmp_path)
    qradar, splunk = settings.siem_destinations
    assert (qradar.format, qradar.streams) == ("cef", ["alerts"])
    assert splunk.hec_url == "https://splunk.example:8088/services/collector/event"
    assert "abc" not in repr(settings)
    with pytest.raises(ValidationError, match="used more than once"):
        ServerSettings(data_dir=tmp_path, siem_destinations=[
            {"name": "x", "format": "cef", "address": "udp://a"},
            {"name": "x", "format": "ecs", "address": "udp://b"}])


def test_outbox_refuses_a_zero_queue() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Outbox("x", sender=None, queue_size=0)  # type: ignore[arg-type]


def test_a_sensor_problem_reaches_the_alerts_stream_only(hec: HecStandIn) -> None:
    alerts = SiemDestination(name="alerts", format="hec", address=hec.url, token=TOKEN,
                             streams=["alerts"])
    actions = SiemDestination(name="actions", format="hec", address=hec.url, token=TOKEN,
                              streams=["actions"])
    publisher = SiemPublisher([alerts, actions], "1.0")
    publisher.start()
    try:
        publisher.on_sensor_problem({"kind": "sensor", "id": "a-1/process/stalled",
                                     "agent_id": "a-1", "host": "pc-7", "sensor": "process",
                                     "state": "stalled", "detail": "scan running 75 s",
                                     "last_ok": None})
        [event] = hec.wait_for(1)
        assert publisher.flush(10)
    finally:
        assert publisher.stop(10)
    doc = event["event"]
    assert doc["event"]["action"] == "sensor-stalled" and doc["event"]["kind"] == "alert"
    assert doc["event"]["outcome"] == "failure" and doc["event"]["reason"] == "scan running 75 s"
    assert doc["warden"]["sensor"]["state"] == "stalled" and "rule" not in doc
    assert len(hec.events) == 1


def test_a_stalled_sensor_reported_at_check_in_reaches_hec(
    settings: ServerSettings, initialized: InitResult, hec: HecStandIn,
) -> None:
    destination = {"name": "splunk", "format": "hec", "address": hec.url, "token": TOKEN,
                   "streams": ["alerts"]}
    stalled = {"state": "stalled", "last_ok": "2026-03-04T05:00:00Z",
               "detail": "a scan has been running for 75 s, past its 60 s deadline"}
    with server_with(settings, [destination], initialized.enroll_secret) as (client, headers):
        for _ in range(2):  # the second check-in says nothing new
            answer = client.post("/api/v1/agent/checkin", headers=headers, json={
                "status": {"spool_depth": 0, "sensors": {"installed": stalled}}})
            assert answer.status_code == 200, answer.text
        [event] = hec.wait_for(1)
    doc = event["event"]
    assert (doc["event"]["action"], doc["event"]["kind"]) == ("sensor-stalled", "alert")
    assert doc["host"]["name"] == "pc-7" and event["host"] == "pc-7"
    assert doc["warden"]["sensor"] == {"sensor": "installed", "state": "stalled",
                                       "detail": stalled["detail"],
                                       "last_ok": "2026-03-04T05:00:00Z"}
    assert len(hec.events) == 1


def test_ecs_over_a_unix_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        destination = SiemDestination(name="local", format="ecs", address=f"unix://{path}")
        publisher = SiemPublisher([destination], "1.0", hostname="warden-1")
        publisher.start()
        try:
            publisher.publish(_record(3))
            data = sock.recv(65536)
        finally:
            assert publisher.stop(10)
    head, _, message = data.decode().partition(" - finding-opened - ")
    assert head.startswith("<131>1 2026-03-04T05:06:07.000000Z warden-1 warden")
    assert json.loads(message)["event"]["id"] == "00000000-0000-0000-0000-000000000003"


def test_a_finding_opened_and_resolved_in_one_batch_is_reported_both_ways(
    settings: ServerSettings, initialized: InitResult, hec: HecStandIn,
) -> None:
    # An agent offline while someone ran Telegram for a minute uploads both at once.
    destination = {"name": "splunk", "format": "hec", "address": hec.url, "token": TOKEN}
    opening = opened("brief")
    closing = {"id": str(uuid.uuid4()), "type": "finding_resolved",
               "time": (NOW + dt.timedelta(minutes=1)).isoformat(), "finding": {"key": "brief"}}
    with server_with(settings, [destination], initialized.enroll_secret) as (client, headers):
        answer = client.post(EVENTS, json={"events": [closing, opening]}, headers=headers)
        assert answer.status_code == 200
        events = hec.wait_for(2)
    assert [(e["event"]["event"]["action"], e["event"]["event"]["kind"],
             e["event"]["event"]["id"]) for e in events] == [
        ("finding-opened", "alert", opening["id"]),
        ("finding-resolved", "event", closing["id"])]
