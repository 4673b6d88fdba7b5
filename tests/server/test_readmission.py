"""Re-admitting a revoked machine: `POST /api/v1/agents/{id}/readmit`.

Revocation refuses the agent's token and its machine's enrollment; re-admission
lifts the second only. The machine comes back by enrolling again with a valid
secret, as the same agent (id, findings, history) with a new token; the token it
had when revoked stays refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.store import audit, enroll_secrets
from tests.server.admin_support import (
    API,
    TELEGRAM_PROCESS,
    assert_error,
    bearer,
    event,
    post_events,
)

EnrolledAgent = Any
DB = sessionmaker[Session]
ENROLL = "/api/v1/agent/enroll"
CHECKIN = "/api/v1/agent/checkin"


def revoke(client: TestClient, admin_token: str, agent_id: str) -> None:
    response = client.post(f"{API}/agents/{agent_id}/revoke", headers=bearer(admin_token))
    assert response.status_code == 200, response.text


def readmit(client: TestClient, admin_token: str, agent_id: str) -> Any:
    return client.post(f"{API}/agents/{agent_id}/readmit", headers=bearer(admin_token))


def telegram_findings(client: TestClient, admin_token: str, agent: EnrolledAgent) -> Any:
    response = client.get(f"{API}/findings", params={"host": agent.facts["hostname"]},
                          headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_revoke_refuse_readmit_and_the_machine_enrolls_back_as_the_same_agent(
    client: TestClient, admin_token: str, enroll_secret: str,
    enroll: Callable[..., EnrolledAgent], db: DB,
) -> None:
    agent = enroll(hostname="rebuilt-pc")
    post_events(client, agent.headers, event(TELEGRAM_PROCESS))
    [before] = telegram_findings(client, admin_token, agent)

    revoke(client, admin_token, agent.agent_id)
    assert_error(client.post(ENROLL, json=agent.facts, headers=bearer(enroll_secret)), 403,
                 "agent_revoked")

    readmitted = readmit(client, admin_token, agent.agent_id)
    assert readmitted.status_code == 200, readmitted.text
    body = readmitted.json()
    assert (body["id"], body["revoked_at"]) == (agent.agent_id, None)
    assert body["state"] in ("active", "silent")
    # Re-admission alone revives nothing: the token the machine had stays refused.
    assert_error(client.post(CHECKIN, json={}, headers=agent.headers), 401)

    # Back by enrolling, signed by the machine's key: re-admission keeps the bound key.
    again = client.post(ENROLL, json=agent.signed_facts(), headers=bearer(enroll_secret))
    assert again.status_code == 201, again.text
    assert again.json()["agent_id"] == agent.agent_id
    new_token = again.json()["agent_token"]
    assert new_token != agent.token
    assert client.post(CHECKIN, json={}, headers=bearer(new_token)).status_code == 200
    assert_error(client.post(CHECKIN, json={}, headers=agent.headers), 401)

    # The same agent carries on: its open finding is there, and seeing Telegram again
    # counts on that finding instead of opening another.
    post_events(client, bearer(new_token), event(TELEGRAM_PROCESS))
    [after] = telegram_findings(client, admin_token, agent)
    assert (after["id"], after["status"], after["count"]) == (before["id"], "open", 2)
    listed = client.get(f"{API}/agents/{agent.agent_id}", headers=bearer(admin_token)).json()
    assert (listed["state"], listed["open_findings"]) == ("active", 1)

    with db() as session:
        [entry] = audit.list_entries(session, action="agent.readmit",
                                     target=f"agent:{agent.agent_id}")
        reenrolled = audit.list_entries(session, action="agent.reenroll",
                                        target=f"agent:{agent.agent_id}")
    assert entry.actor.endswith(":initial admin")
    assert entry.before is not None and entry.before["revoked_at"] is not None
    assert entry.after is not None and entry.after["revoked_at"] is None
    assert len(reenrolled) == 1


def test_a_readmitted_machine_still_needs_a_valid_secret(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent,
    make_secret: Callable[..., str], db: DB,
) -> None:
    secret = make_secret(group="lab")
    revoke(client, admin_token, enrolled_agent.agent_id)
    assert readmit(client, admin_token, enrolled_agent.agent_id).status_code == 200
    with db() as session:
        [row] = [row for row in enroll_secrets.list_all(session) if row.group == "lab"]
        enroll_secrets.revoke(session, row.id, actor="test")
        session.commit()
    assert_error(client.post(ENROLL, json=enrolled_agent.facts, headers=bearer(secret)), 401)
    assert_error(client.post(ENROLL, json=enrolled_agent.facts, headers=bearer("wen_" + "x" * 43)),
                 401)


def test_readmitting_an_agent_that_is_not_revoked_changes_nothing(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent, db: DB,
) -> None:
    assert_error(readmit(client, admin_token, enrolled_agent.agent_id), 409,
                 "agent_not_revoked")
    # Its token still works (re-admission never rotates a live agent's token).
    assert client.post(CHECKIN, json={}, headers=enrolled_agent.headers).status_code == 200
    assert_error(readmit(client, admin_token, "no-such-agent"), 404, "not_found")
    with db() as session:
        assert audit.list_entries(session, action="agent.readmit") == []


def test_readmitting_twice_is_refused_the_second_time(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent,
) -> None:
    revoke(client, admin_token, enrolled_agent.agent_id)
    assert readmit(client, admin_token, enrolled_agent.agent_id).status_code == 200
    assert_error(readmit(client, admin_token, enrolled_agent.agent_id), 409,
                 "agent_not_revoked")


def test_a_readmitted_agent_counts_again_and_can_be_revoked_again(
    client: TestClient, admin_token: str, enroll_secret: str,
    enrolled_agent: EnrolledAgent,
) -> None:
    agent_id = enrolled_agent.agent_id
    revoke(client, admin_token, agent_id)
    stats = client.get(f"{API}/stats", headers=bearer(admin_token)).json()
    assert stats["agents"]["revoked"] == 1
    readmit(client, admin_token, agent_id)
    stats = client.get(f"{API}/stats", headers=bearer(admin_token)).json()
    assert stats["agents"]["revoked"] == 0 and stats["compliance"]["total"] == 1

    again = client.post(ENROLL, json=enrolled_agent.signed_facts(),
                        headers=bearer(enroll_secret))
    assert again.status_code == 201, again.text
    revoke(client, admin_token, agent_id)
    assert_error(client.post(CHECKIN, json={}, headers=bearer(again.json()["agent_token"])), 401)
    assert_error(client.post(ENROLL, json=enrolled_agent.facts, headers=bearer(enroll_secret)),
                 403, "agent_revoked")
    listed = client.get(f"{API}/agents/{agent_id}", headers=bearer(admin_token)).json()
    assert listed["state"] == "revoked"
