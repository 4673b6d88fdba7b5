"""A blocked exec as the agent sends it (agent.uplink.events): stored with its block details."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from agent.uplink.events import blocked_exec_events
from policies.engine import Finding
from server.models import Finding as FindingRow
from server.store import findings as findings_store
from tests.server.conftest import EnrolledAgent
from tests.server.test_agent_api import DB, EVENTS

DIGEST = "ab" * 32
FINDING = Finding(
    app="telegram", app_name="Telegram", verdict="deny", action="block", mode="enforce",
    sensor="process", key="telegram|process|exec:/tmp/x/Telegram",
    evidence={"pid": 4242, "name": "Telegram", "exe": "/tmp/x/Telegram", "username": "alice",
              "sha256": DIGEST},
    alternative="signal", confidence="medium", message="", matched="process.names: Telegram")
BLOCK = {"action": "block", "ok": True, "detail": "exec of /tmp/x/Telegram denied (EPERM)",
         "path": "/tmp/x/Telegram", "sha256": DIGEST, "user": "alice", "parent": "/bin/bash"}


def _batch(finding: Finding, result: dict[str, Any]) -> dict[str, Any]:
    items = blocked_exec_events(finding, [result])
    return {"events": [server_event for server_event, _, _ in items]}


def test_a_blocked_exec_is_a_closed_finding_with_the_block_on_its_timeline(
    client: Any, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    response = client.post(EVENTS, json=_batch(FINDING, BLOCK), headers=enrolled_agent.headers)
    assert response.status_code == 200, response.text
    with db() as session:
        row = session.scalars(sa.select(FindingRow).where(
            FindingRow.key == FINDING.key)).one()
        timeline = findings_store.timeline(session, row)
    assert row.status == "resolved"
    assert row.evidence["exe"] == "/tmp/x/Telegram" and row.evidence["sha256"] == DIGEST
    (action,) = [event for event in timeline if event.type == "action"]
    # What the agent sent, with the fields it left out stored as null (e.g. `mode`).
    assert {name: value for name, value in action.payload["result"].items()
            if value is not None} == BLOCK
    # A second attempt reopens the same finding (its count goes up), and closes it again.
    again = client.post(EVENTS, json=_batch(FINDING, BLOCK), headers=enrolled_agent.headers)
    assert again.status_code == 200, again.text
    with db() as session:
        row = session.scalars(sa.select(FindingRow).where(
            FindingRow.key == FINDING.key)).one()
    assert row.status == "resolved" and row.count == 2


def test_a_block_result_with_a_bad_hash_is_refused(
    client: Any, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    # The agent's own builder refuses such a result (policies.wire); another client might not.
    bad = _batch(dataclasses.replace(FINDING, evidence={}), BLOCK)
    for event in bad["events"]:
        if event["type"] == "action":
            event["result"]["sha256"] = "not-a-hash"
    response = client.post(EVENTS, json=bad, headers=enrolled_agent.headers)
    assert response.status_code == 422, response.text
    assert "sha256" in response.text
    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(FindingRow)) == 0
