"""Findings: one row per (agent, key), kept up to date from the agent's events.

Events may arrive late or out of order (an agent offline for a day, a retry
after a timeout), so each change is guarded by event time: an old
"resolved" cannot close a finding that was seen again later, and an old
"opened" cannot reopen one resolved after it.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from server.actors import actor_name
from server.db import utcnow
from server.models import TRIAGE_STATES, Agent, Event, Finding
from server.store import audit, bulk, outcomes


@dataclass(eq=False, slots=True)
class FindingState:
    """The columns of one finding that events change, as plain values.

    Ingest works on these rather than on ORM rows: building and flushing ORM objects
    one by one was most of a batch's cost, while a batch's findings are read with one
    SELECT and written with one INSERT and one executemany UPDATE (see `save`).
    """

    id: int | None
    key: str
    app: str
    sensor: str
    verdict: str
    action: str
    status: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    resolved_at: dt.datetime | None
    count: int
    evidence: dict[str, Any]
    alternative: str | None
    confidence: str | None
    message: str
    matched: str
    triage: str
    outcomes: dict[str, Any] | None
    # The stored values, to write only the rows a batch changed (None: a new row).
    loaded: tuple[Any, ...] | None = None


_STATE_FIELDS = tuple(name for name in FindingState.__dataclass_fields__ if name != "loaded")
_WRITTEN = tuple(name for name in _STATE_FIELDS if name != "id")
_TABLE = cast(sa.Table, Finding.__table__)
_LOAD_COLUMNS = tuple(_TABLE.c[name] for name in _STATE_FIELDS)
# Built once, as every statement of a batch: building one costs about what running it does.
_LOAD = (sa.select(*_LOAD_COLUMNS)
         .where(_TABLE.c.agent_id == sa.bindparam("agent_id"),
                _TABLE.c.key.in_(sa.bindparam("keys", expanding=True)))
         .order_by(_TABLE.c.key)
         .with_for_update())
# On PostgreSQL the keys go as one array: psycopg parses a statement of more than 50
# parameters in Python on every run (see server.store.bulk), and a batch has 50 events.
_LOAD_POSTGRESQL = (sa.select(*_LOAD_COLUMNS)
                    .where(_TABLE.c.agent_id == sa.bindparam("agent_id"),
                           _TABLE.c.key == sa.any_(sa.bindparam(
                               "keys", type_=postgresql.ARRAY(sa.String))))
                    .order_by(_TABLE.c.key)
                    .with_for_update())
# Updates bind the row's id under another name: `id` would be taken for the SET clause.
_UPDATE = (sa.update(_TABLE).where(_TABLE.c.id == sa.bindparam("row_id"))
           .values({name: bulk.bound(_TABLE, name) for name in _WRITTEN}))
_INSERT = bulk.BulkInsert(_TABLE, ("agent_id", *_WRITTEN), returning=("id", "key"))


# The written columns of a state, in _WRITTEN's order: read in C, several times a row.
_values: Callable[[FindingState], tuple[Any, ...]] = operator.attrgetter(*_WRITTEN)


@dataclass
class FindingChanges:
    """What one batch did to findings, for alerts and metrics after commit."""

    opened: list[FindingState] = field(default_factory=list)
    resolved: list[FindingState] = field(default_factory=list)


def load_for_update(
    session: Session, agent_id: str, keys: Iterable[str]
) -> dict[str, FindingState]:
    # Sorted keys and ORDER BY: concurrent batches lock rows in one order, so never deadlock.
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    statement = (_LOAD_POSTGRESQL if session.get_bind().dialect.name == "postgresql"
                 else _LOAD)
    rows = session.execute(statement, {"agent_id": agent_id, "keys": wanted})
    known = {}
    for values in rows:
        row = FindingState(*values)
        row.loaded = tuple(values[1:])  # the columns after the id: _WRITTEN's
        known[row.key] = row
    return known


def save(session: Session, agent_id: str, known: dict[str, FindingState]) -> None:
    """Write what a batch changed: new rows in one INSERT (their ids set on the states),
    changed rows in one executemany UPDATE; unchanged rows are not written."""
    # Key order, the order rows are locked in: racing batches insert (and wait) alike.
    created = [row for key, row in sorted(known.items()) if row.loaded is None]
    changed = [row for row in known.values()
               if row.loaded is not None and _values(row) != row.loaded]
    if created:
        inserted = _INSERT.run(session, [
            {"agent_id": agent_id, **dict(zip(_WRITTEN, _values(row), strict=True))}
            for row in created])
        ids = {key: row_id for row_id, key in inserted}
        for row in created:
            row.id = ids[row.key]
    if changed:
        session.execute(_UPDATE, [
            {"row_id": row.id, **dict(zip(_WRITTEN, _values(row), strict=True))}
            for row in sorted(changed, key=_key_of)])
    for row in (*created, *changed):
        row.loaded = _values(row)


def _key_of(row: FindingState) -> str:
    return row.key


def by_ids(session: Session, ids: Iterable[int]) -> dict[int, Finding]:
    """ORM rows by id, for views of what a batch changed (alerts, the SIEM stream)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {row.id: row for row in session.scalars(
        sa.select(Finding).where(Finding.id.in_(wanted)))}


def apply_opened(
    known: dict[str, FindingState],
    time: dt.datetime,
    finding: dict[str, Any],
    changes: FindingChanges,
    *,
    restated: bool = False,
) -> None:
    """`restated`: the agent re-evaluated a finding still open (a new policy), so the terms
    change but the count of sightings does not."""
    row = known.get(finding["key"])
    if row is None:
        row = _new_row(time, finding, status="open")
        known[row.key] = row
        changes.opened.append(row)
        return
    if not restated or row.status != "open":
        row.count += 1
    if time >= row.last_seen:
        _describe(row, finding)
        row.last_seen = time
    row.first_seen = min(row.first_seen, time)
    if row.status == "resolved" and (row.resolved_at is None or time >= row.resolved_at):
        row.status = "open"
        row.resolved_at = None
        # Security marked it resolved, but it is back: it needs a fresh look.
        if row.triage == "resolved":
            row.triage = "new"
        changes.opened.append(row)


def apply_resolved(
    known: dict[str, FindingState],
    time: dt.datetime,
    finding: dict[str, Any],
    changes: FindingChanges,
) -> None:
    row = known.get(finding["key"])
    if row is None:
        # Its "opened" is still on the way (or was never sent); record what we can.
        if all(finding.get(name) for name in ("app", "sensor", "verdict")):
            row = _new_row(time, finding, status="resolved")
            row.resolved_at = time
            known[row.key] = row
        return
    if row.status == "open" and time >= row.last_seen:
        row.status = "resolved"
        row.resolved_at = time
        changes.resolved.append(row)


def _new_row(time: dt.datetime, finding: dict[str, Any], status: str) -> FindingState:
    row = FindingState(id=None, key=finding["key"], app=finding["app"],
                       sensor=finding["sensor"], verdict="", action="", status=status,
                       first_seen=time, last_seen=time, resolved_at=None, count=1,
                       evidence={}, alternative=None, confidence=None, message="",
                       matched="", triage="new", outcomes=None)
    _describe(row, finding)
    return row


def _describe(row: FindingState, finding: dict[str, Any]) -> None:
    row.verdict = finding["verdict"]
    row.action = finding.get("action") or "report"
    row.evidence = finding.get("evidence") or {}
    row.alternative = finding.get("alternative")
    row.confidence = finding.get("confidence")
    row.message = finding.get("message") or ""
    row.matched = finding.get("matched") or ""


def open_counts_by_app(session: Session) -> dict[str, int]:
    return {app: count for app, count in session.execute(_open_counts_by_app())}


@functools.cache
def _open_counts_by_app() -> sa.Select[str, int]:
    # Built once: the stats and the overview ask on every request.
    return (sa.select(Finding.app, sa.func.count()).where(Finding.status == "open")
            .group_by(Finding.app))


def get(session: Session, finding_id: int) -> Finding | None:
    return session.get(Finding, finding_id)


def set_triage(
    session: Session, finding_id: int, state: str, comment: str | None, actor: str
) -> Finding | None:
    """Record a reviewer's verdict on a finding (and its audit entry); None if there is none.

    Triage is the reviewers' state, separate from the agent's `status`: a
    finding the agent still sees open can be acknowledged or excepted.
    """
    if state not in TRIAGE_STATES:
        raise ValueError(f"unknown triage state {state!r}; use one of {', '.join(TRIAGE_STATES)}")
    row = session.get(Finding, finding_id, with_for_update=True)
    if row is None:
        return None
    before = _triage_of(row)
    row.triage = state
    row.triage_comment = comment or None
    row.triage_by = actor
    row.triage_at = utcnow()
    audit.record(session, actor, "finding.triage", f"finding:{row.id}", before=before,
                 after=_triage_of(row))
    return row


def set_triage_many(
    session: Session, finding_ids: list[int], state: str, comment: str | None, actor: str
) -> tuple[list[Finding], list[int]]:
    """Triage several findings in one transaction: (the rows, in order), or, when some ids
    are unknown, ([], those ids) and nothing changed. One audit entry per finding."""
    wanted = list(dict.fromkeys(finding_ids))
    # In id order, so two bulk requests lock rows in one order (no deadlock).
    rows = {row.id: row for row in session.scalars(
        sa.select(Finding).where(Finding.id.in_(wanted)).order_by(Finding.id)
        .with_for_update())}
    missing = [finding_id for finding_id in wanted if finding_id not in rows]
    if missing:
        return [], missing
    changed = []
    for finding_id in wanted:
        row = set_triage(session, finding_id, state, comment, actor)
        assert row is not None  # locked above
        changed.append(row)
    return changed, []


def _triage_of(row: Finding) -> dict[str, Any]:
    return {"triage": row.triage, "triage_comment": row.triage_comment,
            "triage_by": row.triage_by,
            "triage_at": row.triage_at.isoformat() if row.triage_at else None}


def timeline(session: Session, finding: Finding) -> list[Event]:
    """Every event the agent sent about this finding, oldest first."""
    return list(session.scalars(
        sa.select(Event)
        .where(Event.agent_id == finding.agent_id, Event.finding_key == finding.key)
        .order_by(Event.time, Event.received_at)
    ))


def as_dict(row: Finding, agent: Agent | None = None) -> dict[str, Any]:
    """The API shape of a finding; pass the agent to fill `host` and `group`."""
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "host": agent.hostname if agent else None,
        "group": agent.group if agent else None,
        "app": row.app,
        "sensor": row.sensor,
        "key": row.key,
        "verdict": row.verdict,
        "action": row.action,
        "status": row.status,
        "triage": row.triage,
        "triage_comment": row.triage_comment,
        "triage_by": row.triage_by,
        "triage_by_name": actor_name(row.triage_by),
        "triage_at": row.triage_at.isoformat() if row.triage_at else None,
        "evidence": row.evidence,
        "alternative": row.alternative,
        "confidence": row.confidence,
        "message": row.message,
        "matched": row.matched,
        "first_seen": row.first_seen.isoformat(),
        "last_seen": row.last_seen.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "count": row.count,
        "outcomes": outcomes.outcome_list(row.outcomes),
        "outcome": outcomes.outcome_text(row.action, row.outcomes),
    }


def event_as_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "time": event.time.isoformat(),
        "received_at": event.received_at.isoformat(),
        "finding_key": event.finding_key,
        "payload": event.payload,
    }
