"""Retention: finding and deleting what is old enough to go.

Two kinds of rows go: events received before the cutoff, and findings the
agent resolved before the cutoff, with every event of theirs. Open findings
always stay, however old — the app is still there — though their oldest events
go like any others (the finding row keeps first_seen, count and evidence).

Each function here does one bounded batch in the caller's session and never
commits; server.jobs.pruning runs them one short transaction after another, so
ingestion waits for one batch at most, never for a whole prune.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from server.models import Event, Finding
from server.store import violations

# Any fixed number (distinct from the migration lock): one pruning batch at a time
# across all the servers sharing a PostgreSQL database.
_PRUNE_LOCK_ID = 0x5741_5250


@dataclass(frozen=True)
class FindingRef:
    id: int
    agent_id: str
    key: str
    app: str


@dataclass(frozen=True)
class Prunable:
    """What a prune with this cutoff would delete now."""

    events: int
    findings: int


def lock_pruning(session: Session) -> None:
    """Serialise pruning batches of several servers (PostgreSQL; SQLite has one writer anyway).

    Two servers deleting the same rows in different orders could deadlock each
    other; the lock is released when the batch's transaction ends.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PRUNE_LOCK_ID})


def delete_old_events(session: Session, cutoff: dt.datetime, limit: int) -> int:
    """Delete up to `limit` of the oldest events received before `cutoff`; how many went."""
    oldest = (sa.select(Event.id).where(Event.received_at < cutoff)
              .order_by(Event.received_at).limit(limit))
    return _rowcount(session.execute(
        sa.delete(Event).where(Event.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)))


def _resolved_before(cutoff: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(Finding.status == "resolved", Finding.resolved_at < cutoff)


def lock_resolved_findings(
    session: Session, cutoff: dt.datetime, limit: int, after: tuple[str, str] | None = None
) -> list[FindingRef]:
    """Up to `limit` findings resolved before `cutoff`, locked, in (agent, key) order.

    The order is ingestion's (it locks one agent's findings by key), so a batch
    reopening a finding and a prune deleting it wait for each other, never deadlock.
    `after` continues from the previous batch's last (agent_id, key), so rows
    that stay (open or recent) are not read again batch after batch.
    """
    query = sa.select(Finding.id, Finding.agent_id, Finding.key, Finding.app).where(
        _resolved_before(cutoff))
    if after is not None:
        query = query.where(sa.tuple_(Finding.agent_id, Finding.key) > sa.tuple_(*after))
    query = query.order_by(Finding.agent_id, Finding.key).limit(limit).with_for_update()
    return [FindingRef(row.id, row.agent_id, row.key, row.app)
            for row in session.execute(query)]


def delete_findings(session: Session, refs: list[FindingRef]) -> tuple[int, int]:
    """Delete these findings and all their events: (findings, events) deleted.

    `refs` must come from `lock_resolved_findings` in this same transaction: the
    row locks are what keep a concurrent batch from reopening one meanwhile.
    """
    if not refs:
        return 0, 0
    pairs = [(ref.agent_id, ref.key) for ref in refs]
    events = _rowcount(session.execute(
        sa.delete(Event).where(sa.tuple_(Event.agent_id, Event.finding_key).in_(pairs))
        .execution_options(synchronize_session=False)))
    findings = _rowcount(session.execute(
        sa.delete(Finding).where(Finding.id.in_([ref.id for ref in refs]))
        .execution_options(synchronize_session=False)))
    # A violation whose findings all went goes with them; one with findings left is
    # recounted from what stays.
    touched: dict[str, set[str]] = {}
    for ref in refs:
        touched.setdefault(ref.agent_id, set()).add(ref.app)
    for agent_id in sorted(touched):
        violations.refresh(session, agent_id, touched[agent_id])
    return findings, events


def count_prunable(session: Session, cutoff: dt.datetime) -> Prunable:
    """What deleting everything before `cutoff` would remove, without removing it."""
    old_events = session.scalar(
        sa.select(sa.func.count()).select_from(Event).where(Event.received_at < cutoff)) or 0
    findings = session.scalar(
        sa.select(sa.func.count()).select_from(Finding).where(_resolved_before(cutoff))) or 0
    # Events of those findings received after the cutoff go with them; older ones are
    # already counted above.
    late_events = session.scalar(
        sa.select(sa.func.count()).select_from(Event)
        .join(Finding, sa.and_(Finding.agent_id == Event.agent_id,
                               Finding.key == Event.finding_key))
        .where(_resolved_before(cutoff), Event.received_at >= cutoff)) or 0
    return Prunable(events=old_events + late_events, findings=findings)


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)
