"""Exceptions over the admin API and the agent API: grant, merge, refuse, revoke, audit;
requests from machines (as `exception_requested` events) approved and denied; and the
signed document every check-in carries."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from policies.compiler import canonical_json
from policies.exceptions import ExceptionsDocument
from server.crypto.signing import verify_bytes
from tests.server.admin_support import assert_error, bearer, post_events

API = "/api/v1"


def _in(days: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


def _grant(client: TestClient, token: str, **body: Any) -> Any:
    return client.post(f"{API}/exceptions", json=body, headers=bearer(token))


def _checkin(client: TestClient, agent: Any) -> dict[str, Any]:
    response = client.post(f"{API}/agent/checkin", json={}, headers=agent.headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_grant_merges_lists_shows_revokes_and_audits(
        client: TestClient, admin_token: str, enroll: Any) -> None:
    agent = enroll(hostname="press-01")
    first = _grant(client, admin_token, app="telegram", host="press-01", until=_in(10),
                   reason="press office monitors public channels")
    assert first.status_code == 201, first.text
    granted = first.json()
    assert (granted["agent_id"], granted["state"], granted["merged"]) == \
        (agent.agent_id, "active", False)
    # The same app and machine again, longer: the one exception, extended.
    second = _grant(client, admin_token, app="telegram", host=agent.agent_id, until=_in(20),
                    reason="press office monitors public channels")
    assert second.status_code == 200, second.text
    assert second.json()["id"] == granted["id"] and second.json()["merged"] is True
    assert second.json()["until"] > granted["until"]
    # Shorter again: never shortened by a grant.
    third = _grant(client, admin_token, app="telegram", host="press-01", until=_in(5),
                   reason="press office monitors public channels")
    assert third.json()["until"] == second.json()["until"]
    listed = client.get(f"{API}/exceptions", params={"state": "active"},
                        headers=bearer(admin_token)).json()["items"]
    assert [item["id"] for item in listed] == [granted["id"]]
    assert listed[0]["hostname"] == "press-01"

    revoked = client.post(f"{API}/exceptions/{granted['id']}/revoke",
                          headers=bearer(admin_token))
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    shown = client.get(f"{API}/exceptions/{granted['id']}", headers=bearer(admin_token))
    assert shown.json()["revoked_by"] == revoked.json()["revoked_by"] is not None
    assert client.get(f"{API}/exceptions", params={"state": "active"},
                      headers=bearer(admin_token)).json()["items"] == []
    # After the revocation, a grant is a new exception.
    again = _grant(client, admin_token, app="telegram", host="press-01", until=_in(3),
                   reason="again")
    assert again.status_code == 201 and again.json()["id"] != granted["id"]
    actions = [entry["action"] for entry in client.get(
        f"{API}/audit", params={"action": "exception.*"},
        headers=bearer(admin_token)).json()["items"]]
    assert actions == ["exception.grant", "exception.revoke", "exception.extend",
                       "exception.extend", "exception.grant"]


@pytest.mark.parametrize(("change", "field"), [
    ({"app": "no-such-app"}, "app"),
    ({"host": "nowhere-01"}, "host"),
    ({"until": "2001-01-01T00:00:00Z"}, "until"),
    ({"until": "past"}, "until"),
    ({"until": "year"}, "until"),
    ({"reason": "   "}, "reason"),
    ({"group": "finance"}, "host"),  # host and group both
    ({"host": None, "group": "no-such-group"}, "group"),
])
def test_bad_grants_are_422_naming_the_field_and_change_nothing(
        client: TestClient, admin_token: str, enroll: Any, change: dict[str, Any],
        field: str) -> None:
    enroll(hostname="desk-07")
    body: dict[str, Any] = {"app": "telegram", "host": "desk-07", "until": _in(30),
                            "reason": "needed"}
    body.update(change)
    if body["until"] == "past":
        body["until"] = _in(-0.01)
    if body["until"] == "year":
        body["until"] = _in(366)
    if body.get("host") is None:
        body.pop("host")
    response = _grant(client, admin_token, **body)
    error = assert_error(response, 422, "validation_error")
    fields = {detail.get("field") or detail["loc"][-1] for detail in error["details"]}
    assert fields == {field}, error
    assert client.get(f"{API}/exceptions", headers=bearer(admin_token)).json()["items"] == []


def test_group_grants_reach_the_groups_agents_signed(
        client: TestClient, admin_token: str, enroll: Any, make_secret: Any,
        initialized: Any) -> None:
    press = enroll(hostname="press-02", secret=make_secret(group="press"))
    other = enroll(hostname="desk-02")
    assert _grant(client, admin_token, app="telegram", group="press", until=_in(7),
                  reason="press office").status_code == 201
    key = client.app.state.context.signer.public_key_b64  # type: ignore[attr-defined]
    for agent, apps in ((press, ["telegram"]), (other, [])):
        signed = _checkin(client, agent)["exceptions"]
        assert verify_bytes(key, canonical_json(signed["document"]), signed["signature"])
        document = ExceptionsDocument.model_validate(signed["document"])
        assert document.agent_id == agent.agent_id
        assert [item.app for item in document.exceptions] == apps


def _request_event(app: str = "telegram", days: int = 30) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "exception_requested",
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "request": {"app": app, "days": days, "reason": "I run the press channel",
                        "user": "alice", "uid": 1000}}


def test_a_request_is_pending_then_approved_and_the_agent_hears_it(
        client: TestClient, admin_token: str, enroll: Any) -> None:
    agent = enroll(hostname="press-03")
    asked = _request_event(days=30)
    post_events(client, agent.headers, asked)
    retried = client.post(f"{API}/agent/events", json={"events": [asked]},
                          headers=agent.headers)
    assert retried.json()["duplicates"] == [asked["id"]]  # a retried upload: one request
    pending = client.get(f"{API}/exception-requests", params={"status": "pending"},
                         headers=bearer(admin_token)).json()["items"]
    assert [(item["app"], item["requested_by"], item["hostname"]) for item in pending] == \
        [("telegram", "alice", "press-03")]
    request_id = pending[0]["id"]
    approved = client.post(f"{API}/exception-requests/{request_id}/approve",
                           json={"days": 7, "comment": "for the campaign"},
                           headers=bearer(admin_token))
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    again = client.post(f"{API}/exception-requests/{request_id}/deny",
                        headers=bearer(admin_token))
    assert_error(again, 409, "already_decided")
    document = ExceptionsDocument.model_validate(_checkin(client, agent)["exceptions"]["document"])
    [granted] = document.exceptions
    assert granted.app == "telegram"
    assert dt.timedelta(days=6.9) < granted.until - dt.datetime.now(dt.UTC) < \
        dt.timedelta(days=7)
    [answer] = document.answers
    assert (answer.request_id, answer.decision, answer.until, answer.comment) == \
        (asked["id"], "approved", granted.until, "for the campaign")
    actions = {entry["action"] for entry in client.get(
        f"{API}/audit", params={"action": "exception*"},
        headers=bearer(admin_token)).json()["items"]}
    assert actions == {"exception_request.create", "exception_request.approve",
                       "exception.grant"}


def test_a_denied_request_grants_nothing_and_says_so(
        client: TestClient, admin_token: str, enroll: Any) -> None:
    agent = enroll(hostname="desk-04")
    post_events(client, agent.headers, _request_event())
    [pending] = client.get(f"{API}/exception-requests",
                           headers=bearer(admin_token)).json()["items"]
    denied = client.post(f"{API}/exception-requests/{pending['id']}/deny",
                         json={"comment": "use Signal"}, headers=bearer(admin_token))
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    document = ExceptionsDocument.model_validate(_checkin(client, agent)["exceptions"]["document"])
    assert document.exceptions == []
    assert [(a.decision, a.comment) for a in document.answers] == [("denied", "use Signal")]


def test_an_excepted_finding_is_kept_shown_and_filtered_not_alerted(
        client: TestClient, admin_token: str, enroll: Any) -> None:
    agent = enroll(hostname="press-06")
    post_events(client, agent.headers, {
        "id": str(uuid.uuid4()), "type": "finding_opened",
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "finding": {"key": "telegram|process|77@1.0", "app": "telegram", "sensor": "process",
                    "verdict": "excepted", "action": "report",
                    "evidence": {"pid": 77, "name": "telegram-desktop"}}})
    found = client.get(f"{API}/findings", params={"verdict": "excepted"},
                       headers=bearer(admin_token)).json()["items"]
    assert [(f["host"], f["verdict"], f["action"]) for f in found] == \
        [("press-06", "excepted", "report")]
    assert client.get(f"{API}/findings", params={"verdict": "deny"},
                      headers=bearer(admin_token)).json()["items"] == []
