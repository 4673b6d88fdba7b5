"""CEF and ECS as their specifications define them: escapes, severities, categorisation."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from server.siem.cef import cef_line
from server.siem.ecs import Observer, ecs_document
from server.siem.records import (
    action_outcome,
    action_record,
    finding_record,
    sensor_record,
    syslog_severity,
)
from server.siem.senders import SyslogBatchSender
from tests.server.siem_support import parse_cef

NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
OBSERVER = Observer(hostname="warden-1", version="1.2")
# ECS 8.x allowed values (ecs/schemas: event.kind, event.category, event.type, event.outcome).
ECS_KINDS = {"alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error",
             "signal"}
ECS_CATEGORIES = {"api", "authentication", "configuration", "database", "driver", "email",
                  "file", "host", "iam", "intrusion_detection", "library", "malware",
                  "network", "package", "process", "registry", "session", "threat",
                  "vulnerability", "web"}
ECS_TYPES = {"access", "admin", "allowed", "change", "connection", "creation", "deletion",
             "denied", "end", "error", "group", "indicator", "info", "installation",
             "protocol", "start", "user"}


def finding(**overrides: Any) -> dict[str, Any]:
    base = {"id": 5, "agent_id": "a-1", "host": "pc-7", "app": "telegram",
            "app_name": "Telegram", "sensor": "process", "verdict": "deny",
            "action": "notify", "key": "k", "count": 2,
            "evidence": {"pid": 7, "name": "Telegram", "exe": "/usr/bin/telegram"}}
    return {**base, **overrides}


@pytest.mark.parametrize(("value", "wire"), [
    # CEF extension escapes: backslash, equals sign, line breaks.
    ("a=b", "a\\=b"),
    ("C:\\Apps\\t.exe", "C:\\\\Apps\\\\t.exe"),
    ("one\ntwo", "one\\ntwo"),
    ("one\r\ntwo", "one\\ntwo"),
    ("one\rtwo", "one\\rtwo"),
    # A pipe needs no escape in the extension.
    ("a|b", "a|b"),
    # Other controls become server.untrusted_text's visible form, its backslash escaped.
    ("esc\x1b[2J", "esc\\\\u001b[2J"),
    ("\u202egpj.exe", "\\\\u202egpj.exe"),
])
def test_cef_extension_escapes(value: str, wire: str) -> None:
    record = finding_record("finding_opened", finding(
        evidence={"name": "x", "exe": f"/opt/{value}"}), "id-1", NOW)
    line = cef_line(record, "1.0")
    assert f"filePath=/opt/{wire} " in line
    assert "\n" not in line and "\r" not in line
    parsed = parse_cef(line)[1]["filePath"]
    visible = value.replace("\r\n", "\n").replace("\x1b", "\\u001b").replace(
        "\u202e", "\\u202e")
    assert parsed == f"/opt/{visible}"


def test_cef_header_escapes_pipe_and_backslash_and_stays_one_line() -> None:
    record = finding_record("finding_opened", finding(host="pc|7\\x\ny"), "id-1", NOW)
    line = cef_line(record, "1|2\\3")
    header, extension = parse_cef(line)
    assert header[3] == "1|2\\3"
    assert "on host pc|7\\x y" in header[5]  # the line break became a space in the header
    assert extension["shost"] == "pc|7\\x\ny"
    assert "\n" not in line


@pytest.mark.parametrize(("record", "cef", "syslog"), [
    (finding_record("finding_opened", finding(), "e", NOW), 8, 3),
    (finding_record("finding_opened", finding(verdict="alert"), "e", NOW), 5, 4),
    (finding_record("finding_opened", finding(verdict="allow"), "e", NOW), 1, 5),
    (finding_record("finding_resolved", finding(), "e", NOW), 1, 5),
    (action_record(finding(), {"action": "notify", "ok": True}, "e", NOW), 3, 5),
    (action_record(finding(), {"action": "terminate", "ok": True}, "e", NOW), 6, 4),
    (action_record(finding(), {"action": "notify", "ok": False, "detail": "no notify-send"},
                   "e", NOW), 7, 3),
    (action_record(finding(), {"action": "terminate", "ok": False,
                               "detail": "audit mode: not terminated"}, "e", NOW), 2, 5),
    (sensor_record({"kind": "sensor", "id": "a/process/error", "state": "error"}, NOW), 7, 3),
    (sensor_record({"kind": "sensor", "id": "a/process/stalled", "state": "stalled"}, NOW),
     5, 4),
])
def test_severity_is_one_scale_everywhere(record: Any, cef: int, syslog: int) -> None:
    assert record.severity == cef
    assert parse_cef(cef_line(record, "1"))[0][6] == str(cef)
    assert syslog_severity(record.severity) == syslog
    document = ecs_document(record, OBSERVER)
    assert document["event"]["severity"] == cef
    assert document["event"]["kind"] in ECS_KINDS
    assert set(document["event"]["category"]) <= ECS_CATEGORIES
    assert set(document["event"]["type"]) <= ECS_TYPES
    assert document["event"]["outcome"] in {"success", "failure", "unknown"}


@pytest.mark.parametrize(("result", "outcome"), [
    ({"action": "notify", "ok": True}, "success"),
    ({"action": "notify", "ok": False, "detail": "notify-send not found"}, "failure"),
    ({"action": "terminate", "ok": False, "detail": "audit mode: not terminated"}, "unknown"),
    # A newer agent that states its outcome is believed.
    ({"action": "terminate", "ok": False, "outcome": "unknown"}, "unknown"),
])
def test_action_outcomes(result: dict[str, Any], outcome: str) -> None:
    assert action_outcome(result) == outcome


@pytest.mark.parametrize(("sensor", "evidence", "category", "types"), [
    ("process", {"pid": 1}, ["process"], ["start"]),
    ("installed", {"source": "deb", "id": "telegram-desktop"}, ["package"], ["installation"]),
    ("network", {"remote_ip": "149.154.167.51"}, ["network"],
     ["connection", "start", "denied"]),
])
def test_ecs_categorisation_per_sensor(sensor: str, evidence: dict[str, Any],
                                       category: list[str], types: list[str]) -> None:
    opened = ecs_document(finding_record("finding_opened", finding(
        sensor=sensor, evidence=evidence), "e", NOW), OBSERVER)
    assert opened["event"]["category"] == category and opened["event"]["type"] == types
    resolved = ecs_document(finding_record("finding_resolved", finding(
        sensor=sensor, evidence=evidence), "e", NOW), OBSERVER)
    assert "start" not in resolved["event"]["type"] and "denied" not in resolved["event"]["type"]
    assert resolved["event"]["kind"] == "event"


def test_ecs_splits_a_windows_path() -> None:
    document = ecs_document(finding_record("finding_opened", finding(evidence={
        "exe": "C:\\Users\\bob\\AppData\\Telegram.exe"}), "e", NOW), OBSERVER)
    assert document["file"] == {"path": "C:\\Users\\bob\\AppData\\Telegram.exe",
                                "name": "Telegram.exe", "directory": "C:\\Users\\bob\\AppData",
                                "extension": "exe"}


@pytest.mark.parametrize("format_", ["cef", "ecs"])
def test_a_datagram_shortens_values_and_stays_parseable(format_: str) -> None:
    long = "/opt/" + "x" * 5000
    record = finding_record("finding_opened", finding(evidence={
        "exe": long, "cmdline": [long, long]}), "e", NOW)

    def render(record: Any, limit: int | None) -> str:
        if format_ == "cef":
            return cef_line(record, "1", limit)
        return json.dumps(ecs_document(record, OBSERVER, limit))

    sender = SyslogBatchSender("udp://127.0.0.1:9", render, "warden-1", max_datagram_bytes=1500)
    message = sender.message(record)
    assert len(message) <= 1500
    body = message.split(b" - ", 2)[2].decode()
    if format_ == "cef":
        assert parse_cef(body)[1]["filePath"].endswith("…")
    else:
        assert json.loads(body)["process"]["executable"].endswith("…")
    # Over TCP nothing is shortened, but for CEF's own caps (1023 characters for filePath).
    tcp = SyslogBatchSender("tcp://127.0.0.1:9", render, "warden-1")
    body = tcp.message(record).split(b" - ", 2)[2].decode()
    if format_ == "cef":
        assert len(parse_cef(body)[1]["filePath"]) == 1023
        assert len(parse_cef(body)[1]["cs6"]) == 4000
    else:
        assert json.loads(body)["process"]["executable"] == long
