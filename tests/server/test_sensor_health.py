"""Sensor health at check-in: stored, bounded, shown on the host page, alerted once per change.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.alerts import format_rfc5424, slack_text, summary_text
from server.alerts.webhook import WebhookSender
from server.models import Agent
from tests.server.dashboard_support import log_in_with_token

CHECKIN = "/api/v1/agent/checkin"
LAST_OK = "2025-03-01T12:00:00Z"
STALLED = {"state": "stalled", "last_ok": LAST_OK,
           "detail": "a scan has been running for 75 s, past its 60 s deadline"}
OK = {"state": "ok", "last_ok": LAST_OK, "detail": ""}


def checkin(client: TestClient, agent: Any, **sensors: dict[str, Any]) -> Any:
    response = client.post(CHECKIN, json={"status": {"spool_depth": 0, "sensors": sensors}},
                           headers=agent.headers)
    assert response.status_code == 200, response.text
    return response


def test_a_checkin_stores_each_sensor_and_alerts_once_per_change(
    app: FastAPI, client: TestClient, enrolled_agent: Any, db: sessionmaker[Session]
) -> None:
    alerts: list[dict[str, Any]] = []
    app.state.context.hooks.on_sensor_problem.append(alerts.append)
    checkin(client, enrolled_agent, process=OK, installed=OK)
    assert alerts == []
    checkin(client, enrolled_agent, process=OK, installed=STALLED)
    (alert,) = alerts
    assert alert == {"kind": "sensor", "id": f"{enrolled_agent.agent_id}/installed/stalled",
                     "agent_id": enrolled_agent.agent_id,
                     "host": enrolled_agent.facts["hostname"], "sensor": "installed",
                     "state": "stalled", "detail": STALLED["detail"], "last_ok": LAST_OK}
    # Still stalled at the next check-ins: nothing new to say.
    checkin(client, enrolled_agent, process=OK, installed=STALLED)
    checkin(client, enrolled_agent, process=OK, installed={**STALLED, "detail": "for 135 s"})
    assert len(alerts) == 1
    # Stalled -> error is a change; a second sensor going bad is its own alert.
    checkin(client, enrolled_agent, process={"state": "error", "detail": "OSError: EIO"},
            installed={"state": "error", "detail": "PermissionError: /var/lib/dpkg"})
    assert [(a["sensor"], a["state"]) for a in alerts[1:]] == [
        ("installed", "error"), ("process", "error")]
    # Recovery, then stalled again: alerted again.
    checkin(client, enrolled_agent, process=OK, installed=OK)
    checkin(client, enrolled_agent, process=OK, installed=STALLED)
    assert [(a["sensor"], a["state"]) for a in alerts[3:]] == [("installed", "stalled")]
    with db() as session:
        agent = session.get(Agent, enrolled_agent.agent_id)
        assert agent is not None and agent.status is not None
        assert agent.status["sensors"]["installed"] == STALLED
        assert agent.status["sensors"]["process"] == {"state": "ok", "last_ok": LAST_OK,
                                                      "detail": ""}


def test_an_agent_that_sends_no_sensors_still_checks_in(
    app: FastAPI, client: TestClient, enrolled_agent: Any, db: sessionmaker[Session]
) -> None:
    alerts: list[dict[str, Any]] = []
    app.state.context.hooks.on_sensor_problem.append(alerts.append)
    response = client.post(CHECKIN, json={"status": {"spool_depth": 1, "newer_field": 1}},
                           headers=enrolled_agent.headers)
    assert response.status_code == 200, response.text
    with db() as session:
        agent = session.get(Agent, enrolled_agent.agent_id)
        assert agent is not None and agent.status == {"spool_depth": 1}
    # A sensor this server does not know yet is kept, and alerted like the others.
    checkin(client, enrolled_agent, bluetooth={**STALLED, "future_key": True})
    assert [(a["sensor"], a["state"]) for a in alerts] == [("bluetooth", "stalled")]


def test_a_sensor_name_that_is_not_an_id_is_dropped_not_stored_or_alerted(
    app: FastAPI, client: TestClient, enrolled_agent: Any, db: sessionmaker[Session]
) -> None:
    # OpenAPI cannot say what form a key must have in a way clients honour, so the server
    # does not refuse the check-in for it: it keeps the well-named sensors only.
    alerts: list[dict[str, Any]] = []
    app.state.context.hooks.on_sensor_problem.append(alerts.append)
    response = client.post(CHECKIN, json={"status": {"sensors": {
        "Not A Name": STALLED, "\x1b[31m": STALLED, "installed": STALLED}}},
        headers=enrolled_agent.headers)
    assert response.status_code == 200, response.text
    with db() as session:
        agent = session.get(Agent, enrolled_agent.agent_id)
        assert agent is not None and agent.status is not None
        assert agent.status["sensors"] == {"installed": STALLED}
    assert [a["sensor"] for a in alerts] == ["installed"]


@pytest.mark.parametrize(("sensors", "field"), [
    ({"installed": {"state": "sleeping"}}, "body.status.sensors.installed.state"),
    ({"installed": {"state": "ok", "last_ok": "2025-03-01T12:00:00"}},
     "body.status.sensors.installed.last_ok"),
    ({"installed": {"state": "error", "detail": "x" * 1025}},
     "body.status.sensors.installed.detail"),
    ({f"sensor{n}": {"state": "ok"} for n in range(17)}, "body.status.sensors"),
], ids=["unknown-state", "naive-time", "long-detail", "too-many"])
def test_sensor_reports_are_bounded(
    client: TestClient, enrolled_agent: Any, sensors: dict[str, Any], field: str
) -> None:
    response = client.post(CHECKIN, json={"status": {"sensors": sensors}},
                           headers=enrolled_agent.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


def test_the_host_page_shows_each_sensor_and_why(
    app: FastAPI, client: TestClient, enrolled_agent: Any, admin_token: str
) -> None:
    checkin(client, enrolled_agent, process=OK, installed=STALLED,
            network={"state": "stalled", "detail": "the first listing hangs"})
    page = log_in_with_token(app, admin_token).get(f"/hosts/{enrolled_agent.agent_id}").text
    table = page[page.index('<table id="sensors">'):]
    table = table[:table.index("</table>")]
    assert '<td>installed</td>' in table
    assert "<td>never</td>" in table  # the network sensor never finished a scan
    assert '<span class="badge sensor-stalled">stalled</span>' in table
    assert '<span class="badge sensor-ok">ok</span>' in table
    assert STALLED["detail"] in table
    assert 'datetime="2025-03-01T12:00:00+00:00"' in table
    # The sensors are in their table, not dumped as a dict among the health facts.
    assert "{&#39;installed&#39;" not in page and "{'installed'" not in page


ALERT = {"kind": "sensor", "id": "a1/installed/stalled", "agent_id": "a1", "host": "pc-7",
         "sensor": "installed", "state": "stalled", "detail": STALLED["detail"],
         "last_ok": LAST_OK}


def test_a_sensor_alert_reads_as_one_and_not_as_a_finding() -> None:
    text = ("Warden agent on host pc-7: the installed sensor is stalled (a scan has been "
            f"running for 75 s, past its 60 s deadline); last good scan {LAST_OK}")
    assert summary_text(ALERT) == text
    assert slack_text(ALERT) == f":warning: {text}"
    assert WebhookSender("http://127.0.0.1:9/hook").payload(ALERT) == {
        "text": f":warning: {text}", "sensor_alert": ALERT}
    message = format_rfc5424(ALERT, summary_text(ALERT), "server",
                             dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC))
    assert b" warden - sensor-stalled [warden@32473 host=\"pc-7\" sensor=\"installed\" " \
           b"state=\"stalled\" finding_id=\"a1/installed/stalled\" agent_id=\"a1\"]" in message
