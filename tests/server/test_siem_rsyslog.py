"""The findings stream reaches a real rsyslog as CEF and as ECS JSON, and reads back intact.

rsyslogd (Debian's) is started per test on loopback ports with its own config, writing
each message it parsed to a file; the test parses CEF and ECS out of that file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.bootstrap import InitResult
from server.settings import ServerSettings
from server.siem.destinations import SiemDestination
from tests.server.siem_support import RSYSLOGD, Rsyslog, parse_cef, start_rsyslog

pytestmark = pytest.mark.skipif(not os.access(RSYSLOGD, os.X_OK),
                                reason="needs rsyslogd (apt-get install rsyslog)")
EVENTS = "/api/v1/agent/events"
NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
# What a local user can name a program: CEF's and syslog's special characters, a line
# break that would forge a second line, an escape sequence and a bidi override.
HOSTILE_EXE = "/opt/tele|gram\\bin/a=b\nforged: yes\x1b[2J\u202egpj.exe"
# As ECS shows it: every control character in server.untrusted_text's visible form.
VISIBLE_EXE = (HOSTILE_EXE.replace("\n", "\\u000a").replace("\x1b", "\\u001b")
               .replace("\u202e", "\\u202e"))
HOSTILE_ARGS = ["telegram-desktop", "--proxy=socks5://x|y", "line1\nline2", "back\\slash"]


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    yield from start_rsyslog(tmp_path / "rsyslog")


def event(kind: str, key: str, when: dt.datetime, **finding: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": str(uuid.uuid4()), "type": kind, "time": when.isoformat(),
                            "finding": {"key": key, **finding}}
    return body


def _server(settings: ServerSettings, destinations: list[dict[str, Any]]) -> TestClient:
    configured = [SiemDestination.model_validate(d) for d in destinations]
    return TestClient(create_app(settings.model_copy(update={"siem_destinations": configured})))


def _enroll(client: TestClient, secret: str, host_facts: Callable[..., dict[str, Any]],
            hostname: str) -> dict[str, str]:
    answer = client.post("/api/v1/agent/enroll", json=host_facts(hostname=hostname),
                         headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['agent_token']}"}


PROCESS = {"app": "telegram", "sensor": "process", "verdict": "deny", "action": "terminate",
           "alternative": "signal", "message": "Telegram is not allowed; use Signal",
           "evidence": {"pid": 4242, "ppid": 1, "name": "telegram-desktop",
                        "exe": HOSTILE_EXE, "cmdline": HOSTILE_ARGS, "username": "alice",
                        "create_time": 1_700_000_000.5, "sha256": "ab" * 32}}


def test_cef_over_tcp_and_ecs_over_udp_carry_every_change(
    settings: ServerSettings, initialized: InitResult, rsyslog: Rsyslog,
    host_facts: Callable[..., dict[str, Any]],
) -> None:
    destinations = [
        {"name": "arcsight", "format": "cef", "address": f"tcp://127.0.0.1:{rsyslog.tcp_port}"},
        {"name": "elastic", "format": "ecs", "address": f"udp://127.0.0.1:{rsyslog.udp_port}",
         "streams": ["alerts", "actions"]},
    ]
    with _server(settings, destinations) as client:
        headers = _enroll(client, initialized.enroll_secret, host_facts, "pc-7")
        opened = event("finding_opened", "p1", NOW, **PROCESS)
        action = {**event("action", "p1", NOW + dt.timedelta(seconds=1), **PROCESS),
                  "result": {"action": "terminate", "ok": False,
                             "detail": "access denied: pid=4242 | kept running"}}
        allowed = event("finding_opened", "s1", NOW, app="signal", sensor="installed",
                        verdict="allow", evidence={"source": "deb", "id": "signal-desktop",
                                                   "version": "7.1", "path": "/opt/Signal"})
        resolved = event("finding_resolved", "p1", NOW + dt.timedelta(seconds=2))
        for batch in ([opened, action, allowed], [resolved]):
            answer = client.post(EVENTS, json={"events": batch}, headers=headers)
            assert answer.status_code == 200, answer.text
        # CEF: opened deny, action, opened allow, resolved; ECS: the alert and the action.
        received = rsyslog.wait_for(6)
    by_input = {"imtcp": [], "imudp": []}  # type: dict[str, list[dict[str, Any]]]
    for message in received:
        by_input[message["input"]].append(message)
    cef = {m["msgid"]: m for m in by_input["imtcp"]}
    assert sorted(cef) == ["finding-opened", "finding-resolved", "terminate"]
    assert len(by_input["imtcp"]) == 4 and len(by_input["imudp"]) == 2

    # The syslog layer as rsyslog parsed it: RFC 5424, facility local0, severity from CEF's.
    deny = next(m for m in by_input["imtcp"] if "telegram" in m["msg"]
                and m["msgid"] == "finding-opened")
    assert (deny["version"], deny["app"], deny["facility"]) == ("1", "warden", "16")
    assert deny["severity"] == "3"  # error, for CEF severity 8
    assert dt.datetime.fromisoformat(deny["timestamp"]) == NOW
    header, ext = parse_cef(deny["msg"])
    assert header[:5] == ["CEF:0", "Warden", "Warden", header[3], "finding-opened"]
    assert header[6] == "8"
    assert "Telegram (deny) on host pc-7" in header[5]
    # Every hostile character survives the round trip, as data, on one line.
    assert ext["filePath"] == HOSTILE_EXE.replace("\x1b", "\\u001b").replace(
        "\u202e", "\\u202e")
    assert ext["fname"].endswith("gpj.exe") and "\n" in ext["fname"]
    assert ext["cs6Label"] == "commandLine" and ext["cs6"] == " ".join(HOSTILE_ARGS)
    assert (ext["sproc"], ext["spid"], ext["suser"], ext["shost"]) == (
        "telegram-desktop", "4242", "alice", "pc-7")
    assert (ext["cs1Label"], ext["cs1"], ext["cs2"], ext["cs3"]) == (
        "app", "telegram", "deny", "process")
    assert ext["fileHash"] == "ab" * 32
    assert ext["rt"] == str(int(NOW.timestamp() * 1000))
    assert ext["outcome"] == "success" and ext["act"] == "terminate"
    assert ext["cs4Label"] == "findingId" and ext["cs4"].isdigit()

    header, ext = parse_cef(cef["terminate"]["msg"])
    assert header[4] == "action-terminate" and header[6] == "7"
    assert ext["outcome"] == "failure" and ext["act"] == "terminate"
    assert ext["reason"] == "access denied: pid=4242 | kept running"
    header, ext = parse_cef(cef["finding-resolved"]["msg"])
    assert header[6] == "1" and ext["cs4"] == parse_cef(deny["msg"])[1]["cs4"]
    [allow] = [parse_cef(m["msg"]) for m in by_input["imtcp"]
               if parse_cef(m["msg"])[1]["cs1"] == "signal"]
    assert allow[0][6] == "1" and allow[1]["filePath"] == "/opt/Signal"

    # ECS over UDP: only the streams asked for; the alert is event.kind alert.
    docs = {doc["event"]["action"]: doc for doc in
            (json.loads(m["msg"]) for m in by_input["imudp"])}
    assert sorted(docs) == ["finding-opened", "terminate"]
    alert = docs["finding-opened"]
    assert alert["ecs"]["version"].startswith("8.")
    assert alert["event"]["kind"] == "alert"
    assert alert["event"]["category"] == ["process"] and alert["event"]["type"] == ["start"]
    assert alert["event"]["outcome"] == "success" and alert["event"]["severity"] == 8
    assert alert["host"]["name"] == "pc-7" and alert["rule"]["id"] == "telegram"
    assert alert["rule"]["category"] == "deny"
    assert alert["process"]["pid"] == 4242 and alert["process"]["parent"]["pid"] == 1
    assert alert["process"]["name"] == "telegram-desktop"
    assert alert["observer"]["vendor"] == "Warden"
    assert all(len(m["msg"].encode()) < 8192 for m in by_input["imudp"])
    assert "\x1b" not in json.dumps(alert, ensure_ascii=False)
    acted = docs["terminate"]
    assert acted["event"]["outcome"] == "failure" and acted["event"]["kind"] == "event"
    assert acted["event"]["reason"] == "access denied: pid=4242 | kept running"
    assert acted["event"]["id"] == action["id"]


def test_ecs_over_tcp_keeps_every_field_whole(
    settings: ServerSettings, initialized: InitResult, rsyslog: Rsyslog,
    host_facts: Callable[..., dict[str, Any]],
) -> None:
    destinations = [{"name": "elastic", "format": "ecs",
                     "address": f"tcp://127.0.0.1:{rsyslog.tcp_port}", "streams": ["findings"]}]
    network = event("finding_opened", "n1", NOW, app="telegram", sensor="network",
                    verdict="deny", action="notify",
                    evidence={"remote_ip": "149.154.167.51", "remote_port": 443,
                              "remote_host": "api.telegram.org", "protocol": "tcp",
                              "local_address": "10.0.0.5:50000", "pid": 77,
                              "process_name": "Telegram"})
    opened = event("finding_opened", "p1", NOW, **PROCESS)
    with _server(settings, destinations) as client:
        headers = _enroll(client, initialized.enroll_secret, host_facts, "pc-8")
        answer = client.post(EVENTS, json={"events": [network, opened]}, headers=headers)
        assert answer.status_code == 200
        received = rsyslog.wait_for(2)
    docs = {doc["event"]["category"][0]: doc for doc in
            (json.loads(m["msg"]) for m in received)}
    net = docs["network"]
    assert net["event"]["type"] == ["connection", "start", "denied"]
    assert net["destination"] == {"address": "api.telegram.org", "ip": "149.154.167.51",
                                  "port": 443, "domain": "api.telegram.org"}
    assert net["network"]["transport"] == "tcp" and net["process"]["pid"] == 77
    assert net["related"]["ip"] == ["149.154.167.51"]
    proc = docs["process"]
    assert proc["process"]["args"] == [arg.replace("\n", "\\u000a") for arg in HOSTILE_ARGS]
    assert proc["process"]["executable"] == VISIBLE_EXE
    assert proc["file"]["name"].endswith("gpj.exe")
    assert proc["process"]["hash"]["sha256"] == "ab" * 32
    assert proc["process"]["start"] == "2023-11-14T22:13:20.500Z"
    assert proc["user"]["name"] == "alice" and proc["related"]["user"] == ["alice"]
    assert proc["warden"]["finding"]["alternative"] == "signal"
