"""Who may do what: enrollment secrets, API tokens, users, and the audit log of every change."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from policies.loader import default_policy_path
from server.store import tokens, users
from tests.server.admin_support import API, assert_error, bearer, event, post_events

EnrolledAgent = Any
Facts = Callable[..., dict[str, Any]]
DB = sessionmaker[Session]
ENROLL = "/api/v1/agent/enroll"


def audit_log(client: TestClient, token: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/audit", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# -- enrollment secrets ------------------------------------------------------------


def test_secret_lifecycle(client: TestClient, admin_token: str, host_facts: Facts) -> None:
    response = client.post(f"{API}/secrets", json={"group": "finance", "note": "laptops"},
                           headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("wen_")
    assert (created["group"], created["note"], created["uses"], created["revoked_at"]) == (
        "finance", "laptops", 0, None)
    enrolled = client.post(ENROLL, json=host_facts(), headers=bearer(secret))
    assert enrolled.status_code == 201 and enrolled.json()["group"] == "finance"

    listed = client.get(f"{API}/secrets", headers=bearer(admin_token)).json()["items"]
    mine = next(item for item in listed if item["id"] == created["id"])
    assert mine["uses"] == 1
    assert "secret" not in mine and "secret_hash" not in mine
    assert secret not in json.dumps(listed)

    revoked = client.post(f"{API}/secrets/{created['id']}/revoke", headers=bearer(admin_token))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert_error(client.post(ENROLL, json=host_facts(), headers=bearer(secret)), 401)
    assert_error(client.post(f"{API}/secrets/999/revoke", headers=bearer(admin_token)), 404)
    # The clear secret never reaches the audit log.
    assert secret not in json.dumps(audit_log(client, admin_token))


@pytest.mark.parametrize("body", [{"group": ""}, {"group": "x" * 256}, {"colour": "red"},
                                  {"note": "n" * 256}])
def test_secret_body_is_validated(client: TestClient, admin_token: str,
                                  body: dict[str, Any]) -> None:
    assert_error(client.post(f"{API}/secrets", json=body, headers=bearer(admin_token)), 422)
    assert len(client.get(f"{API}/secrets", headers=bearer(admin_token)).json()["items"]) == 1


def test_a_secret_without_a_group(client: TestClient, admin_token: str) -> None:
    created = client.post(f"{API}/secrets", json={}, headers=bearer(admin_token)).json()
    assert (created["group"], created["note"]) == (None, None)


# -- API tokens --------------------------------------------------------------------


def test_token_lifecycle_and_role(client: TestClient, admin_token: str) -> None:
    response = client.post(f"{API}/tokens", json={"name": "ci", "role": "viewer"},
                           headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    created = response.json()
    token = created["token"]
    assert token.startswith("wat_")
    assert (created["name"], created["role"], created["revoked_at"]) == ("ci", "viewer", None)
    assert client.get(f"{API}/findings", headers=bearer(token)).status_code == 200
    assert_error(client.post(f"{API}/secrets", json={}, headers=bearer(token)), 403)
    listed = client.get(f"{API}/tokens", headers=bearer(admin_token)).json()["items"]
    assert [item["name"] for item in listed] == ["initial admin", "ci"]
    assert listed[1]["last_used"] is not None
    assert token not in json.dumps(listed)
    revoked = client.post(f"{API}/tokens/{created['id']}/revoke", headers=bearer(admin_token))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert_error(client.get(f"{API}/findings", headers=bearer(token)), 401)
    assert_error(client.post(f"{API}/tokens/999/revoke", headers=bearer(admin_token)), 404)
    assert token not in json.dumps(audit_log(client, admin_token))


@pytest.mark.parametrize("body", [{"name": "x", "role": "root"}, {"role": "viewer"},
                                  {"name": "", "role": "viewer"}])
def test_token_body_is_validated(client: TestClient, admin_token: str,
                                 body: dict[str, Any]) -> None:
    assert_error(client.post(f"{API}/tokens", json=body, headers=bearer(admin_token)), 422)


# -- users ------------------------------------------------------------------------


def test_user_lifecycle(client: TestClient, admin_token: str, db: DB) -> None:
    body = {"username": "carol", "password": "correct horse battery", "role": "analyst"}
    response = client.post(f"{API}/users", json=body, headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    user = response.json()
    assert (user["username"], user["role"], user["disabled"]) == ("carol", "analyst", False)
    assert "password" not in json.dumps(user)
    assert_error(client.post(f"{API}/users", json=body, headers=bearer(admin_token)), 409,
                 "username_taken")
    with db() as session:
        assert users.authenticate(session, "carol", "correct horse battery") is not None
        # A token issued to the user works while the user does.
        _, token = tokens.create(session, name="carol's", role="analyst", actor="test",
                                 user_id=user["id"])
        session.commit()
    assert client.get(f"{API}/findings", headers=bearer(token)).status_code == 200
    listed = client.get(f"{API}/users", headers=bearer(admin_token)).json()["items"]
    assert [item["username"] for item in listed] == ["carol"]

    disabled = client.post(f"{API}/users/{user['id']}/disable", headers=bearer(admin_token))
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert_error(client.get(f"{API}/findings", headers=bearer(token)), 401)
    with db() as session:
        assert users.authenticate(session, "carol", "correct horse battery") is None
    enabled = client.post(f"{API}/users/{user['id']}/enable", headers=bearer(admin_token))
    assert enabled.json()["disabled"] is False
    assert client.get(f"{API}/findings", headers=bearer(token)).status_code == 200
    assert_error(client.post(f"{API}/users/999/disable", headers=bearer(admin_token)), 404)
    assert "correct horse" not in json.dumps(audit_log(client, admin_token))


@pytest.mark.parametrize("body", [
    {"username": "dave", "password": "short", "role": "viewer"},
    {"username": "two words", "password": "long enough pass", "role": "viewer"},
    {"username": "dave", "password": "long enough pass", "role": "root"},
    {"username": "dave", "password": "long enough pass"},
])
def test_user_body_is_validated(client: TestClient, admin_token: str,
                                body: dict[str, Any]) -> None:
    assert_error(client.post(f"{API}/users", json=body, headers=bearer(admin_token)), 422)
    assert client.get(f"{API}/users", headers=bearer(admin_token)).json()["items"] == []


# -- the audit log ------------------------------------------------------------------


def test_every_mutating_admin_call_is_audited_with_before_and_after(
    client: TestClient, admin_token: str, api_token: Callable[..., str],
    enrolled_agent: EnrolledAgent,
) -> None:
    analyst = api_token("analyst", "reviewer")
    post_events(client, enrolled_agent.headers, event())
    finding_id = client.get(f"{API}/findings", headers=bearer(admin_token)).json()[
        "items"][0]["id"]
    policy = default_policy_path().read_bytes().replace(b"mode: audit", b"mode: enforce")
    calls: list[tuple[str, str, str, dict[str, Any] | bytes | None, str, str, bool]] = [
        # (token, method path, json or bytes body, action, target, has a "before")
        (analyst, "POST", f"findings/{finding_id}/triage", {"state": "excepted"},
         "finding.triage", f"finding:{finding_id}", True),
        (admin_token, "POST", "policies", policy, "policy.create", "policy:2", False),
        (admin_token, "POST", "policies/2/activate", None, "policy.activate", "policy:2", True),
        (admin_token, "POST", "policies/rollback", None, "policy.rollback", "policy:1", True),
        (admin_token, "POST", "secrets", {"group": "x"}, "secret.create", "secret:2", False),
        (admin_token, "POST", "secrets/2/revoke", None, "secret.revoke", "secret:2", True),
        (admin_token, "POST", "tokens", {"name": "t", "role": "viewer"}, "token.create",
         "token:3", False),
        (admin_token, "POST", "tokens/3/revoke", None, "token.revoke", "token:3", True),
        (admin_token, "POST", "users", {"username": "erin", "password": "long enough pass",
                                        "role": "viewer"}, "user.create", "user:1", False),
        (admin_token, "POST", "users/1/disable", None, "user.disable", "user:1", True),
        (admin_token, "POST", "users/1/enable", None, "user.enable", "user:1", True),
        (admin_token, "POST", f"agents/{enrolled_agent.agent_id}/revoke", None,
         "agent.revoke", f"agent:{enrolled_agent.agent_id}", True),
    ]
    for token, method, path, body, action, target, has_before in calls:
        kwargs: dict[str, Any] = {"headers": bearer(token)}
        if isinstance(body, bytes):
            kwargs = {"content": body,
                      "headers": {**bearer(token), "Content-Type": "application/yaml"}}
        elif body is not None:
            kwargs["json"] = body
        response = client.request(method, f"{API}/{path}", **kwargs)
        assert response.status_code in (200, 201), (path, response.text)
        newest = audit_log(client, admin_token, limit=1)[0]
        assert (newest["action"], newest["target"]) == (action, target), path
        assert newest["actor"].startswith("token:")
        assert newest["actor"].endswith(":reviewer" if token == analyst else ":initial admin")
        assert isinstance(newest["after"], dict) and newest["after"], path
        if has_before:
            assert isinstance(newest["before"], dict) and newest["before"], path
            assert newest["before"] != newest["after"], path
        else:
            assert newest["before"] is None, path
        assert newest["time"]


def test_audit_filters_and_pages(client: TestClient, admin_token: str) -> None:
    for name in ("a", "b", "c"):
        client.post(f"{API}/tokens", json={"name": name, "role": "viewer"},
                    headers=bearer(admin_token))
    client.post(f"{API}/secrets", json={}, headers=bearer(admin_token))
    everything = audit_log(client, admin_token, limit=500)
    # init: token, secret, policy create, policy activate; then 3 tokens and a secret.
    assert [entry["action"] for entry in everything] == [
        "secret.create", "token.create", "token.create", "token.create", "policy.activate",
        "policy.create", "secret.create", "token.create"]
    assert [e["target"] for e in audit_log(client, admin_token, action="token.create")] == [
        "token:4", "token:3", "token:2", "token:1"]
    assert len(audit_log(client, admin_token, action="policy.*")) == 2
    assert len(audit_log(client, admin_token, actor="warden server init")) == 4
    assert len(audit_log(client, admin_token, target="secret:*")) == 2
    assert audit_log(client, admin_token, action="policy.%") == []  # no SQL wildcards
    paged, params = [], {"limit": 3}
    while True:
        response = client.get(f"{API}/audit", params=params, headers=bearer(admin_token))
        body = response.json()
        paged += body["items"]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert paged == everything
    for query in ("cursor=nope", "limit=501", "who=me"):
        assert_error(client.get(f"{API}/audit?{query}", headers=bearer(admin_token)), 422)
