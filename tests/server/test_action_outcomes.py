"""Each action's outcome as it happened — done, failed and why, or would have (audit mode) —
in the API, the list, both exports, the alert, the dashboard pages, and the overview's count
of machines whose users cannot be told. Findings and action results go in through the agent
API, as the agent (agent.daemon.action_event) sends them. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.alerts.summary import summary_text
from tests.server.admin_support import (
    API,
    T0,
    TELEGRAM_PROCESS,
    bearer,
    event,
    finding_for,
    post_events,
)
from tests.server.dashboard_support import log_in_with_token

EnrolledAgent = Any
NO_NOTIFY_SEND = "notify-send not found: install libnotify-bin (Debian/Ubuntu)"
AUDIT_ONLY = "audit mode: not terminated"
MINUTE = dt.timedelta(minutes=1)
ENFORCE_TERMINATE = """\
name: strict
mode: enforce
rules:
  - app: telegram
    verdict: deny
    action: terminate
    alternative: signal
    message: Telegram is not allowed here.
  - app: signal
    verdict: allow
"""


def action(kind: str, ok: bool, detail: str, time: dt.datetime, mode: str | None = "enforce",
           policy: str | None = ENFORCE_TERMINATE) -> dict[str, Any]:
    result: dict[str, Any] = {"action": kind, "ok": ok, "detail": detail}
    if mode is not None:
        result["mode"] = mode
    return {"id": str(uuid.uuid4()), "type": "action", "time": time.isoformat(),
            "finding": finding_for(TELEGRAM_PROCESS, policy=policy), "result": result}


def the_finding(client: TestClient, token: str) -> dict[str, Any]:
    [item] = client.get(f"{API}/findings", headers=bearer(token)).json()["items"]
    detail: dict[str, Any] = client.get(f"{API}/findings/{item['id']}",
                                        headers=bearer(token)).json()
    assert {key: detail[key] for key in item} == item
    return detail


def cannot_notify(client: TestClient, token: str) -> int:
    count: int = client.get(f"{API}/stats", headers=bearer(token)).json()[
        "compliance"]["cannot_notify"]
    return count


def test_a_failed_notification_is_said_everywhere_and_counted(
    app: FastAPI, client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    alerts: list[dict[str, Any]] = []
    app.state.context.hooks.on_deny_opened.append(alerts.append)
    agent = enroll(hostname="desk-9")
    post_events(client, agent.headers, event(time=T0, policy=ENFORCE_TERMINATE),
                action("notify", False, NO_NOTIFY_SEND, T0),
                action("terminate", True, "terminated", T0))
    finding = the_finding(client, admin_token)
    assert finding["action"] == "terminate"
    assert [(o["action"], o["state"], o["detail"]) for o in finding["outcomes"]] == [
        ("notify", "failed", NO_NOTIFY_SEND), ("terminate", "done", "terminated")]
    assert finding["outcome"] == f"notify: failed ({NO_NOTIFY_SEND}); terminate: done"
    # The alert, sent once the batch is stored, states it too.
    [alert] = alerts
    assert alert["outcome"] == finding["outcome"]
    assert f"[notify: failed ({NO_NOTIFY_SEND}); terminate: done]" in summary_text(alert)
    # Both exports.
    exported = client.get(f"{API}/findings/export", params={"format": "json"},
                          headers=bearer(admin_token)).json()["items"]
    assert exported[0]["outcomes"][0]["state"] == "failed"
    text = client.get(f"{API}/findings/export", params={"format": "csv"},
                      headers=bearer(admin_token)).text
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["outcome"] == finding["outcome"] and '"state": "failed"' in row["outcomes"]
    # The machine, the fleet figures and the hosts filter.
    [listed] = client.get(f"{API}/agents", headers=bearer(admin_token)).json()["items"]
    assert listed["notify_error"] == NO_NOTIFY_SEND
    assert cannot_notify(client, admin_token) == 1
    # A later notification that works: the user can be told again.
    post_events(client, agent.headers, action("notify", True, "shown with notify-send",
                                              T0 + MINUTE))
    assert the_finding(client, admin_token)["outcomes"][0]["state"] == "done"
    assert cannot_notify(client, admin_token) == 0


def test_audit_mode_says_what_would_have_happened_and_late_results_do_not_win(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    post_events(client, enrolled_agent.headers, event(time=T0, policy=ENFORCE_TERMINATE),
                action("terminate", False, AUDIT_ONLY, T0 + 2 * MINUTE, mode="audit"),
                action("notify", True, "shown with notify-send", T0 + 2 * MINUTE))
    # An older failure, delivered late, neither hides the newer result nor marks the machine.
    post_events(client, enrolled_agent.headers,
                action("notify", False, NO_NOTIFY_SEND, T0 + MINUTE))
    finding = the_finding(client, admin_token)
    assert finding["outcome"] == f"notify: done; terminate: would have ({AUDIT_ONLY})"
    assert cannot_notify(client, admin_token) == 0
    # An agent from before results carried their mode: its detail still says audit.
    post_events(client, enrolled_agent.headers,
                action("terminate", False, AUDIT_ONLY, T0 + 3 * MINUTE, mode=None))
    assert the_finding(client, admin_token)["outcomes"][1]["state"] == "would_have"


def test_a_finding_without_results_says_so_rather_than_guessing(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    post_events(client, enrolled_agent.headers, event(time=T0))
    finding = the_finding(client, admin_token)
    assert finding["outcomes"] == []
    assert finding["outcome"] == "notify: no result reported yet"


def test_the_dashboard_pages_state_the_outcome(
    app: FastAPI, client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    agent = enroll(hostname="desk-9")
    post_events(client, agent.headers, event(time=T0, policy=ENFORCE_TERMINATE),
                action("notify", False, NO_NOTIFY_SEND, T0, mode="audit"),
                action("terminate", False, AUDIT_ONLY, T0, mode="audit"))
    browser = log_in_with_token(app, admin_token)
    finding = the_finding(client, admin_token)
    page = browser.get(f"/findings/{finding['id']}").text
    assert "Told the user" not in page
    assert "Message (not delivered)" in page
    assert "notify: failed</span> " + NO_NOTIFY_SEND in page
    assert "terminate: would have</span>" in page
    assert "terminate: would have — audit mode" in page  # the timeline
    listing = browser.get("/findings").text
    assert "outcome-failed" in listing and "outcome-would_have" in listing
    overview = browser.get("/").text
    assert 'id="cannot-notify"' in overview
    assert "where the user cannot be told" in overview
    hosts = browser.get("/hosts", params={"notify": "failing"}).text
    assert "desk-9" in hosts
    host_page = browser.get(f"/hosts/{agent.agent_id}").text
    assert "cannot be told" in host_page and NO_NOTIFY_SEND in host_page


def test_a_policy_restating_an_open_finding_is_not_another_sighting(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    """Activation and rollback make the agent re-judge what is open: seen once stays once."""
    post_events(client, enrolled_agent.headers, event(time=T0))
    for minutes, policy in ((1, ENFORCE_TERMINATE), (2, None)):  # activate, then roll back
        restated = event(time=T0 + minutes * MINUTE, policy=policy)
        restated["restated"] = True
        post_events(client, enrolled_agent.headers, restated)
    finding = the_finding(client, admin_token)
    assert finding["count"] == 1 and finding["action"] == "notify"
    assert len(finding["events"]) == 3
    # A real second launch still counts, and so does a restatement that reopens.
    post_events(client, enrolled_agent.headers, event(time=T0 + 3 * MINUTE))
    assert the_finding(client, admin_token)["count"] == 2
