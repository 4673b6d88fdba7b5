"""Control characters from endpoints never reach a log, a chat or a spreadsheet raw.

A process name holding NUL, ESC [ (a terminal escape), a newline (a forged log line)
or a bidi override is written as a visible `\\u….` escape in the syslog message and
its structured data, the webhook's text and CSV exports; a CSV cell a spreadsheet
would run as a formula gets a leading quote.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.alerts import AlertDispatcher, format_rfc5424, slack_text, summary_text
from server.untrusted_text import csv_cell, escape_controls, has_controls
from tests.server.admin_support import TELEGRAM_PROCESS, event, post_events
from tests.server.conftest import EnrolledAgent
from tests.server.dashboard_support import people

HOSTILE = "tele\x00gram\x1b[2J\x1b]0;owned\x07\nFAKE LOG LINE\r\u202egpj.exe\x85\x9b"
FINDING: dict[str, Any] = {
    "id": "f-1", "agent_id": "a-1", "host": "pc\x1b[31m-7", "app": "telegram",
    "sensor": "process", "verdict": "deny",
    "evidence": {"pid": 123, "name": HOSTILE, "exe": "/usr/bin/telegram-desktop"},
}


def controls_in(text: str) -> list[str]:
    return [char for char in text
            if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or char in "\u2028\u2029\u202e"]


def test_escape_controls_writes_each_one_visibly() -> None:
    assert escape_controls("a\x00b\x1b[1mc\u202e") == "a\\u0000b\\u001b[1mc\\u202e"
    assert escape_controls("plain C:\\Users\\ü — ok") == "plain C:\\Users\\ü — ok"


@pytest.mark.parametrize("around", ["", "plain ascii ", "caf\u00e9 "])
def test_has_controls_says_whether_escape_controls_changes_the_text(around: str) -> None:
    # Every character of the first planes alone and within ASCII or non-ASCII text: ASCII
    # text takes another path than the rest.
    for code in range(0x3000):
        text = around + chr(code) + around
        assert has_controls(text) == (escape_controls(text) != text), hex(code)


def test_the_alert_summary_and_webhook_text_hold_no_control_character() -> None:
    summary = summary_text(FINDING)
    assert controls_in(summary) == []
    assert "tele\\u0000gram\\u001b[2J" in summary and "\\u202egpj.exe" in summary
    assert controls_in(slack_text(FINDING)) == []


def test_syslog_message_and_structured_data_hold_no_control_character() -> None:
    stamp = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    finding = {**FINDING, "agent_id": "a\x00-1\n]"}
    data = format_rfc5424(finding, summary_text(finding), "warden", stamp)
    text = data.decode("utf-8")
    assert controls_in(text) == []
    assert 'agent_id="a\\\\u0000-1 \\]"' in text  # escaped, then RFC 5424's own escapes
    assert 'host="pc\\\\u001b[31m-7"' in text


def test_a_syslog_datagram_over_udp_is_one_clean_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        dispatcher = AlertDispatcher(None, f"udp://127.0.0.1:{sock.getsockname()[1]}",
                                     hostname="warden-test")
        dispatcher.start()
        try:
            dispatcher.submit(FINDING)
            received = sock.recv(65536).decode("utf-8")
        finally:
            dispatcher.stop(10)
    assert controls_in(received) == []
    assert "FAKE LOG LINE" in received and "\n" not in received


@pytest.mark.parametrize(("name", "value", "cell"), [
    ("host", "=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"),
    ("message", "+1", "'+1"),
    ("matched", "@SUM(A1)", "'@SUM(A1)"),
    ("host", "-2+3", "'-2+3"),
    # A leading tab or carriage return is escaped, which also defuses it.
    ("host", "\t=1", "\\u0009=1"),
    ("message", "ok\x1b[2Jthen", "ok\\u001b[2Jthen"),
    ("evidence", {"name": "a\x00\u202e"}, '{"name": "a\\u0000\\u202e"}'),
    ("count", 3, "3"),
    ("resolved_at", None, ""),
])
def test_csv_cells(name: str, value: Any, cell: str) -> None:
    assert csv_cell(name, value) == cell


def test_both_csv_exports_carry_no_control_character_and_no_formula(
    client: TestClient, app: Any, api_token: Any, enroll: Any, admin_token: str
) -> None:
    agent: EnrolledAgent = enroll(hostname="=cmd|' /C calc'!A0")
    made = event(TELEGRAM_PROCESS)
    made["finding"]["evidence"] = {**made["finding"]["evidence"], "name": HOSTILE}
    made["finding"]["message"] = "-" + HOSTILE
    post_events(client, agent.headers, made)
    api = client.get("/api/v1/findings/export", params={"format": "csv"},
                     headers={"Authorization": f"Bearer {admin_token}"}).text
    dashboard = people(app, api_token)("viewer").get("/findings/export.csv").text
    for exported in (api, dashboard):
        [row] = list(csv.DictReader(io.StringIO(exported)))
        assert row["host"].startswith("'=cmd")
        # (The NUL itself became U+FFFD at ingest: PostgreSQL could not store it.)
        assert row["message"].startswith("'-tele\ufffdgram\\u001b[2J")
        for value in row.values():
            assert controls_in(value) == []
    assert api == dashboard
