"""Event ingest as whole batches (server.store.bulk): what one INSERT per table must keep.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.models import Event, Finding, Violation
from tests.server.admin_support import post_events

EVENTS = "/api/v1/agent/events"
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
DB = sessionmaker[Session]
EnrolledAgent = Any


def opened(key: str, time: dt.datetime = T0, **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "finding_opened", "time": time.isoformat(),
            "finding": {"key": key, "app": "telegram", "verdict": "deny", "action": "notify",
                        "sensor": "process", "evidence": {"pid": 4242, "create_time": 1000.0},
                        "message": "Telegram is not allowed"}, **extra}


def test_a_batch_larger_than_one_statement_is_stored_whole(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    # SQLite gets at most 500 rows a statement: 600 new findings take two, one transaction.
    events = [opened(f"telegram:process:{n:04d}", T0 + dt.timedelta(seconds=n))
              for n in range(600)]
    response = client.post(EVENTS, json={"events": [*events, events[3]]},
                           headers=enrolled_agent.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": [item["id"] for item in events],
                               "duplicates": [events[3]["id"]]}
    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Event)) == 600
        stored = session.execute(sa.select(Finding.key, Finding.first_seen, Finding.evidence)
                                 .order_by(Finding.key)).all()
        violation = session.scalars(sa.select(Violation)).one()
    assert len(stored) == 600
    assert stored[599] == ("telegram:process:0599", T0 + dt.timedelta(seconds=599),
                           {"pid": 4242, "create_time": 1000.0})
    assert (violation.findings, violation.open_findings) == (600, 600)
    assert violation.first_seen == T0 and violation.last_seen == T0 + dt.timedelta(seconds=599)


def test_findings_without_action_results_store_none_as_sql_null(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    # Written as the ORM wrote them: no outcome is SQL NULL (not the JSON text `null`), on
    # insert and on a later update, until an action result arrives.
    def post(*events: dict[str, Any]) -> None:
        post_events(client, enrolled_agent.headers, *events)

    def without_outcomes() -> int:
        with db() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(Finding)
                                  .where(Finding.outcomes.is_(None))) or 0

    post(opened("telegram:process:1"), opened("telegram:process:2"))
    assert without_outcomes() == 2
    post(opened("telegram:process:1", T0 + dt.timedelta(minutes=1)))
    assert without_outcomes() == 2
    action = {**opened("telegram:process:2", T0 + dt.timedelta(minutes=2)), "type": "action",
              "result": {"action": "notify", "ok": True, "detail": "told alice"}}
    post(action)
    assert without_outcomes() == 1
    with db() as session:
        payloads = list(session.scalars(sa.select(Event.payload).order_by(Event.time)))
        second = session.scalars(sa.select(Finding).where(
            Finding.key == "telegram:process:2")).one()
    # Stored as sent: only an exception request carries `request`.
    assert all("request" not in payload for payload in payloads)
    assert second.outcomes is not None and second.outcomes["notify"]["state"] == "done"
