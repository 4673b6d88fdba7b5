"""Proof of possession: a stolen enrollment secret plus another machine's id (which every
viewer sees in `GET /api/v1/agents`) no longer takes that machine over.

Re-enrolling a known machine needs a fresh statement signed by the key bound to it
(agent.host.machine makes it, server.crypto.enrollment_proof checks it), or an administrator's
approval of the held request. Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on
PostgreSQL (see conftest).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from agent.host.machine import MachineKey
from server.models import Agent
from server.store import audit
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


def enroll_as(client: TestClient, secret: str, facts: dict[str, Any],
              key: MachineKey | None = None, now: dt.datetime | None = None) -> Any:
    body = {**facts, **key.proof(facts["machine_id"], now)} if key else facts
    return client.post(ENROLL, json=body, headers=bearer(secret))


def described(client: TestClient, admin_token: str, agent_id: str) -> dict[str, Any]:
    response = client.get(f"{API}/agents/{agent_id}", headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def audit_actions(db: DB, agent_id: str) -> list[str]:
    with db() as session:
        return [entry.action for entry in audit.list_entries(session, target=f"agent:{agent_id}")]


def test_a_stolen_secret_and_machine_id_are_held_and_the_victim_keeps_working(
    client: TestClient, admin_token: str, enroll_secret: str,
    enroll: Callable[..., EnrolledAgent], db: DB,
) -> None:
    victim = enroll(hostname="fin-lt-0042")
    post_events(client, victim.headers, event(TELEGRAM_PROCESS))
    # The machine id is public to every viewer.
    listed = client.get(f"{API}/agents", headers=bearer(admin_token)).json()["items"]
    [facts] = [item for item in listed if item["id"] == victim.agent_id]
    stolen = {**victim.facts, "machine_id": facts["machine_id"], "hostname": "attacker"}

    unsigned = enroll_as(client, enroll_secret, stolen)
    error = assert_error(unsigned, 409, "reenrollment_pending")
    assert "approve-reenroll" in error["message"] and "no proof" in error["message"]
    assert error["details"] == [{"agent_id": victim.agent_id}]
    impostor_key = MachineKey.generate()
    signed = enroll_as(client, enroll_secret, stolen, impostor_key)
    error = assert_error(signed, 409, "reenrollment_pending")
    assert "another key than the one bound" in error["message"]

    # No token was handed out; the victim's works, and its finding is its own.
    assert client.post(CHECKIN, json={}, headers=victim.headers).status_code == 200
    view = described(client, admin_token, victim.agent_id)
    assert (view["hostname"], view["open_findings"]) == ("fin-lt-0042", 1)
    assert view["public_key"] == victim.key.public_key
    pending = view["reenrollment"]
    assert pending["public_key"] == impostor_key.public_key
    assert (pending["hostname"], pending["keys_seen"], pending["approved_at"]) == (
        "attacker", 2, None)
    [listed_request] = client.get(f"{API}/reenrollments",
                                  headers=bearer(admin_token)).json()["items"]
    assert (listed_request["agent_id"], listed_request["agent_hostname"]) == (
        victim.agent_id, "fin-lt-0042")
    # Held twice (two keys), audited twice; a retry of the same request only counts.
    assert enroll_as(client, enroll_secret, stolen, impostor_key).status_code == 409
    assert described(client, admin_token, victim.agent_id)["reenrollment"]["attempts"] == 2
    assert audit_actions(db, victim.agent_id).count("agent.reenroll_pending") == 2


def test_the_machine_itself_re_enrolls_with_its_key_and_the_impostor_request_is_dropped(
    client: TestClient, admin_token: str, enroll_secret: str,
    enroll: Callable[..., EnrolledAgent],
) -> None:
    machine = enroll()
    assert enroll_as(client, enroll_secret, machine.facts).status_code == 409
    again = client.post(ENROLL, json=machine.signed_facts(), headers=bearer(enroll_secret))
    assert again.status_code == 201, again.text
    assert again.json()["agent_id"] == machine.agent_id
    assert_error(client.post(CHECKIN, json={}, headers=machine.headers), 401)
    assert client.post(CHECKIN, json={},
                       headers=bearer(again.json()["agent_token"])).status_code == 200
    assert described(client, admin_token, machine.agent_id)["reenrollment"] is None


def test_a_proof_is_taken_once_and_only_while_fresh(
    client: TestClient, enroll_secret: str, enroll: Callable[..., EnrolledAgent],
) -> None:
    machine = enroll()
    replayed = machine.signed_facts()
    assert client.post(ENROLL, json=replayed, headers=bearer(enroll_secret)).status_code == 201
    error = assert_error(client.post(ENROLL, json=replayed, headers=bearer(enroll_secret)),
                         409, "reenrollment_pending")
    assert "replayed" in error["message"]
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    error = assert_error(enroll_as(client, enroll_secret, machine.facts, machine.key, stale),
                         409, "reenrollment_pending")
    assert "behind the server's clock" in error["message"]


def test_a_proof_that_does_not_verify_is_refused(
    client: TestClient, enroll_secret: str, host_facts: Callable[..., dict[str, Any]], db: DB,
) -> None:
    facts = host_facts()
    key = MachineKey.generate()
    body = {**facts, **key.proof("another machine")}  # signed for another machine id
    assert_error(client.post(ENROLL, json=body, headers=bearer(enroll_secret)), 403,
                 "invalid_proof")
    keyless = {**facts, "public_key": key.public_key}
    error = assert_error(client.post(ENROLL, json=keyless, headers=bearer(enroll_secret)),
                         403, "invalid_proof")
    assert "public_key and proof go together" in str(error["message"])
    with db() as session:
        assert session.query(Agent).count() == 0


def test_an_approved_request_enrolls_once_and_binds_its_key(
    client: TestClient, admin_token: str, enroll_secret: str,
    enroll: Callable[..., EnrolledAgent], db: DB,
) -> None:
    victim = enroll()
    rebuilt = MachineKey.generate()  # the machine was reinstalled: its old key is gone
    assert enroll_as(client, enroll_secret, victim.facts, rebuilt).status_code == 409
    approve = f"{API}/agents/{victim.agent_id}/reenrollment/approve"
    # Approving a key other than the one pending (another asked since) is refused.
    assert_error(client.post(approve, json={"public_key": MachineKey.generate().public_key},
                             headers=bearer(admin_token)), 409, "reenrollment_changed")
    approved = client.post(approve, json={"public_key": rebuilt.public_key},
                           headers=bearer(admin_token))
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_by"].endswith(":initial admin")
    # Until the approved machine enrolls, the old token works; another key still waits.
    assert client.post(CHECKIN, json={}, headers=victim.headers).status_code == 200
    assert enroll_as(client, enroll_secret, victim.facts, MachineKey.generate()
                     ).status_code == 409

    enrolled = enroll_as(client, enroll_secret, victim.facts, rebuilt)
    assert enrolled.status_code == 201, enrolled.text
    assert_error(client.post(CHECKIN, json={}, headers=victim.headers), 401)
    view = described(client, admin_token, victim.agent_id)
    assert (view["public_key"], view["reenrollment"]) == (rebuilt.public_key, None)
    # Once: from now on the new key proves itself, and the old one is a stranger.
    assert enroll_as(client, enroll_secret, victim.facts, rebuilt).status_code == 201
    assert enroll_as(client, enroll_secret, victim.facts, victim.key).status_code == 409
    actions = audit_actions(db, victim.agent_id)
    assert actions.count("agent.reenroll_approve") == 1
    assert actions.count("agent.reenroll") == 2


def test_a_rejected_request_is_dropped_and_changes_nothing(
    client: TestClient, admin_token: str, enroll_secret: str,
    enroll: Callable[..., EnrolledAgent], db: DB,
) -> None:
    victim = enroll()
    reject = f"{API}/agents/{victim.agent_id}/reenrollment/reject"
    assert_error(client.post(reject, headers=bearer(admin_token)), 404, "not_found")
    assert enroll_as(client, enroll_secret, victim.facts).status_code == 409
    rejected = client.post(reject, headers=bearer(admin_token))
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["public_key"] is None
    assert described(client, admin_token, victim.agent_id)["reenrollment"] is None
    assert client.post(CHECKIN, json={}, headers=victim.headers).status_code == 200
    assert_error(client.post(f"{API}/agents/{victim.agent_id}/reenrollment/approve",
                             headers=bearer(admin_token)), 404, "not_found")
    assert "agent.reenroll_reject" in audit_actions(db, victim.agent_id)


def test_an_agent_from_before_keys_binds_its_key_at_check_in(
    client: TestClient, admin_token: str, enroll_secret: str,
    enroll: Callable[..., EnrolledAgent],
) -> None:
    legacy = enroll(signed=False)
    assert described(client, admin_token, legacy.agent_id)["public_key"] is None
    # Unbound, nothing can prove it is the same machine: even its own key waits.
    key = MachineKey.generate()
    error = assert_error(enroll_as(client, enroll_secret, legacy.facts, key), 409,
                         "reenrollment_pending")
    assert "no key is bound" in error["message"]

    checkin = client.post(CHECKIN, json={"public_key": key.public_key}, headers=legacy.headers)
    assert checkin.status_code == 200, checkin.text
    assert described(client, admin_token, legacy.agent_id)["public_key"] == key.public_key
    # Bound once: a check-in naming another key does not move it.
    other = MachineKey.generate().public_key
    assert client.post(CHECKIN, json={"public_key": other},
                       headers=legacy.headers).status_code == 200
    assert described(client, admin_token, legacy.agent_id)["public_key"] == key.public_key
    assert_error(client.post(CHECKIN, json={"public_key": "not a key"},
                             headers=legacy.headers), 422)

    enrolled = enroll_as(client, enroll_secret, legacy.facts, key)
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["agent_id"] == legacy.agent_id
