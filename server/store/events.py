"""Event ingestion: store each agent event once, then bring its findings up to date.

Idempotency rests on the database, not on a check-then-insert: events are
inserted with `INSERT .. ON CONFLICT (id) DO NOTHING .. RETURNING id`, so of
two identical batches racing, exactly one transaction gets each id back and
only that one applies it to findings. The other sees them as duplicates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.exceptions import ExceptionRequestInfo
from policies.vocabulary import EventType
from server.db import utcnow
from server.models import Agent, Event, Finding
from server.store import bulk, exceptions, findings, outcomes, violations


@dataclass(frozen=True)
class IncomingEvent:
    """One validated event from an agent (the API layer checks its shape)."""

    id: str
    type: EventType
    time: dt.datetime
    # Has "key"; for finding_opened also "app", "sensor", "verdict".
    finding: dict[str, Any]
    # The event as the agent sent it, kept for the finding's timeline.
    payload: dict[str, Any]
    # An `exception_requested` event's request (its `finding` is empty).
    request: ExceptionRequestInfo | None = None


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    accepted_events: list[IncomingEvent] = field(default_factory=list)
    # Findings this batch opened or reopened, and resolved (written: ids are set).
    opened: list[findings.FindingState] = field(default_factory=list)
    resolved: list[findings.FindingState] = field(default_factory=list)
    # Opened (or reopened) and resolved again within this batch: in `resolved`, not in
    # `opened`; the SIEM stream still reports that they opened (an app run briefly).
    opened_and_resolved: list[findings.FindingState] = field(default_factory=list)
    # With `ingest(.., load_rows=True)`: those findings as ORM rows, by id, read in the
    # batch's transaction (alerts and the SIEM stream show them as the API does).
    rows: dict[int, Finding] = field(default_factory=dict)


def ingest(
    session: Session,
    agent_id: str,
    events: Sequence[IncomingEvent],
    now: dt.datetime | None = None,
    *,
    load_rows: bool = False,
) -> IngestResult:
    """Store new events and apply them to findings; the caller commits."""
    now = now or utcnow()
    result = IngestResult()
    unique: dict[str, IncomingEvent] = {}
    for incoming in events:
        unique.setdefault(incoming.id, incoming)
    inserted = _insert_new(session, agent_id, list(unique.values()), now)
    for incoming in events:
        if incoming.id in inserted:
            result.accepted.append(incoming.id)
            inserted.discard(incoming.id)  # a second copy in the same batch is a duplicate
        else:
            result.duplicates.append(incoming.id)
    result.accepted_events = [unique[event_id] for event_id in result.accepted]
    _apply(session, agent_id, result.accepted_events, result)
    session.flush()
    if load_rows:
        result.rows = findings.by_ids(session, (
            row.id for row in (*result.opened, *result.resolved, *result.opened_and_resolved)
            if row.id is not None))
    return result


def _insert_new(
    session: Session, agent_id: str, events: list[IncomingEvent], now: dt.datetime
) -> set[str]:
    if not events:
        return set()
    # Sorted by id: concurrent batches take the rows' locks in one order (no deadlock).
    rows = [
        {"id": event.id, "agent_id": agent_id, "type": event.type, "time": event.time,
         "received_at": now, "finding_key": event.finding.get("key"), "payload": event.payload}
        for event in sorted(events, key=lambda event: event.id)
    ]
    return {event_id for event_id, in _INSERT_NEW.run(session, rows)}


_INSERT_NEW = bulk.BulkInsert(
    cast(sa.Table, Event.__table__),
    ("id", "agent_id", "type", "time", "received_at", "finding_key", "payload"),
    returning=("id",), skip_existing=("id",))


def _apply(
    session: Session, agent_id: str, events: list[IncomingEvent], result: IngestResult
) -> None:
    for event in events:
        if event.type == "exception_requested" and event.request is not None:
            exceptions.record_request(session, agent_id, event.id, event.request, event.time)
    changes_on = [event for event in events
                  if event.type in ("finding_opened", "finding_resolved")]
    with_findings = [event for event in events if event.type != "exception_requested"]
    if not with_findings:
        return
    known = findings.load_for_update(session, agent_id,
                                     (event.finding["key"] for event in with_findings))
    changes = findings.FindingChanges()
    # In time order, so a batch holding both an open and its resolve ends resolved.
    for event in sorted(changes_on, key=lambda event: event.time):
        if event.type == "finding_opened":
            findings.apply_opened(known, event.time, event.finding, changes,
                                  restated=event.payload.get("restated") is True)
        else:
            findings.apply_resolved(known, event.time, event.finding, changes)
    _apply_actions(session, agent_id, known,
                   [event for event in events if event.type == "action"])
    findings.save(session, agent_id, known)
    session.flush()
    # The violations these findings belong to, in the same transaction: the review list
    # never disagrees with its evidence.
    touched = {known[event.finding["key"]].app for event in changes_on
               if event.finding["key"] in known}
    violations.refresh(session, agent_id, touched)
    # A finding opened and resolved within one batch ends resolved: report it as such.
    result.opened = [row for row in _unique(changes.opened) if row.status == "open"]
    result.resolved = [row for row in _unique(changes.resolved) if row.status == "resolved"]
    result.opened_and_resolved = [row for row in _unique(changes.opened)
                                  if row.status == "resolved"]


def _apply_actions(
    session: Session, agent_id: str, known: dict[str, findings.FindingState],
    actions: list[IncomingEvent],
) -> None:
    # After the openings, so a batch holding a finding and its actions records both. An
    # action on a finding the server never heard of stays in the events table only.
    agent = session.get(Agent, agent_id) if actions else None
    for event in sorted(actions, key=lambda event: event.time):
        row = known.get(event.finding["key"])
        result = event.payload.get("result")
        if row is not None and agent is not None and isinstance(result, dict):
            outcomes.apply_action(row, agent, event.time, result)


def _unique(rows: list[findings.FindingState]) -> list[findings.FindingState]:
    # One state per key, so by key; in the order each first appears.
    return list({row.key: row for row in rows}.values())
