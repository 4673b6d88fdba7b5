"""Check-in and policy poll, the agent API's hot path (one statement each; see server.api.agent).

What the single statement must still get right: only a live agent's own token
works, a caller proves who it is before hearing anything about its body, and
the active policy is read fresh on every call. Runs on SQLite and, with
WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.models import Agent, ServerState
from server.store import agents

EnrolledAgent = Any
DB = sessionmaker[Session]

CHECKIN = "/api/v1/agent/checkin"
POLICY = "/api/v1/agent/policy"
JSON = {"Content-Type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Bodies the check-in refuses, and how it answers a live agent that sends them.
BAD_BODIES = [
    # (body, headers, status, error code)
    (json.dumps({"status": {"spool_depth": -1}}), JSON, 422, "validation_error"),
    (json.dumps({"policy_version": "x" * 65}), JSON, 422, "validation_error"),
    (json.dumps([]), JSON, 422, "validation_error"),
    ("{not json", JSON, 422, "malformed"),
    ("", JSON, 422, "malformed"),
    ("{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("{}", {**JSON, "Content-Encoding": "br"}, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("body", "headers", "status", "code"), BAD_BODIES)
def test_a_bad_checkin_body_is_refused_only_once_the_caller_is_known(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent],
    body: str, headers: dict[str, str], status: int, code: str,
) -> None:
    first = enroll(machine_id="machine-1")
    rotated = enroll(machine_id="machine-1")  # re-enrolled: `first`'s token is dead
    strangers = {"made-up": "wag_made-up", "admin": admin_token, "rotated": first.token}
    for name, token in strangers.items():
        response = client.post(CHECKIN, content=body.encode(), headers={**headers,
                                                                        **bearer(token)})
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    response = client.post(CHECKIN, content=body.encode(), headers={**headers,
                                                                    **bearer(rotated.token)})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_validation_errors_name_the_field_under_body(
    client: TestClient, enrolled_agent: EnrolledAgent
) -> None:
    response = client.post(CHECKIN, json={"status": {"cpu_percent": -1, "rss_bytes": "big"}},
                           headers=enrolled_agent.headers)
    assert response.status_code == 422
    fields = {detail["field"] for detail in response.json()["error"]["details"]}
    assert fields == {"body.status.cpu_percent", "body.status.rss_bytes"}


def test_a_refused_checkin_records_nothing(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    assert client.post(CHECKIN, json={"policy_version": "v1"},
                       headers=enrolled_agent.headers).status_code == 200
    client.post(CHECKIN, json={"policy_version": "v2", "status": {"spool_depth": -1}},
                headers=enrolled_agent.headers)
    with db() as session:
        row = session.get(Agent, enrolled_agent.agent_id)
    assert row is not None and row.policy_version == "v1"


def test_without_an_active_policy_checkin_answers_null_and_poll_404(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    # Read on every call, never cached: the change shows at once (test_admin_policies
    # covers activation and rollback the same way).
    etag = client.get(POLICY, headers=enrolled_agent.headers).headers["etag"]
    with db() as session:
        session.execute(sa.update(ServerState).values(active_policy_number=None))
        session.commit()
    checkin = client.post(CHECKIN, json={}, headers=enrolled_agent.headers)
    assert checkin.status_code == 200
    assert checkin.json()["policy_etag"] is None
    poll = client.get(POLICY, headers={**enrolled_agent.headers, "If-None-Match": etag})
    assert poll.status_code == 404
    assert poll.json()["error"]["code"] == "no_policy"
    # An unknown token is still told so first.
    assert client.get(POLICY, headers=bearer("wag_made-up")).status_code == 401


def test_the_store_answers_for_agent_tokens_only(
    app: FastAPI, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    engine = app.state.context.write_engine
    with engine.begin() as connection:
        assert agents.checkin(connection, admin_token, "x", {}) is None
        assert agents.policy_for(connection, admin_token) is None
        recorded = agents.checkin(connection, enrolled_agent.token, "x", {"spool_depth": 2})
        found = agents.policy_for(connection, enrolled_agent.token)
    assert recorded is not None and found is not None
    assert recorded.agent_id == found.agent_id == enrolled_agent.agent_id
    assert found.active is not None and recorded.policy_etag == found.active.version


def test_openapi_describes_the_hand_read_checkin_body(app: FastAPI) -> None:
    operation = app.openapi()["paths"][CHECKIN]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"policy_version", "status", "public_key"}
    assert "spool_depth" in schema["properties"]["status"]["properties"]
    # Inlined whole: a `$ref` into the model's own `$defs` would not resolve in the document.
    assert "$ref" not in json.dumps(schema)
