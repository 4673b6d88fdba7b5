"""Violations: one row per machine x denied app, gathered from that app's deny findings there.

A person using Telegram ten times a day makes ten process findings, an
install finding and some connection findings; reviewers want one thing to
look at: "Telegram on desk-17". `refresh` rebuilds the violations of the
(agent, app) pairs a change touched from their findings, in the same
transaction as the change (ingest, retention), so the row is always what its
findings say: open while any is open, first/last seen, sightings per sensor.
Recomputing from the findings instead of adding increments keeps it right
whatever order events arrive in. What the findings cannot say — when the
current episode opened, and the reviewers' triage — lives on the row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db import utcnow
from server.models import TRIAGE_STATES, Finding, Violation
from server.store import audit


@dataclass
class _Gathered:
    """What an (agent, app)'s deny findings say, summed over sensors."""

    findings: int = 0
    open_findings: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    # The earliest first_seen and last_seen of its open findings: when it opened, for a
    # new violation and for one that reopens.
    open_first_seen: dt.datetime | None = None
    open_last_seen: dt.datetime | None = None
    resolved_at: dt.datetime | None = None


def refresh(session: Session, agent_id: str, apps: Iterable[str]) -> None:
    """Bring the violations of `agent_id` for `apps` up to date with their findings.

    Call after the findings changed and were flushed. A pair with no deny finding
    left (all pruned, or the policy no longer denies it) has no violation.
    """
    wanted = sorted(set(apps))
    if not wanted:
        return
    # Lock first, then count: a batch that waited for another's lock counts after that one
    # committed, so neither overwrites the other with a stale total. In app order, the
    # order every writer locks them in: no deadlock between batches.
    existing = {row.app: row for row in session.scalars(
        _LOCK, {"agent_id": agent_id, "apps": wanted})}
    gathered = _gather(session, agent_id, wanted)
    for app in wanted:
        row = existing.get(app)
        facts = gathered.get(app)
        if facts is None:
            if row is not None:
                session.delete(row)
            continue
        if row is None:
            session.add(_new(agent_id, app, facts))
        else:
            _update(row, facts)
    session.flush()


# Built once: ingest refreshes on every batch, and building these cost about what running
# them does.
_LOCK = (sa.select(Violation)
         .where(Violation.agent_id == sa.bindparam("agent_id"),
                Violation.app.in_(sa.bindparam("apps", expanding=True)))
         .order_by(Violation.app).with_for_update())
_IS_OPEN = Finding.status == "open"
_GATHER = (
    sa.select(Finding.app, Finding.sensor, sa.func.count(), sa.func.sum(Finding.count),
              sa.func.sum(sa.case((_IS_OPEN, 1), else_=0)),
              sa.func.min(Finding.first_seen), sa.func.max(Finding.last_seen),
              sa.func.min(sa.case((_IS_OPEN, Finding.first_seen))),
              sa.func.min(sa.case((_IS_OPEN, Finding.last_seen))),
              sa.func.max(Finding.resolved_at))
    .where(Finding.agent_id == sa.bindparam("agent_id"),
           # `app || ''` is the app, but not a column an index can look up: SQLite (which
           # keeps no statistics) otherwise reads every finding of the app fleet-wide
           # through ix_findings_app_status, on every batch, instead of this machine's.
           Finding.app.concat("").in_(sa.bindparam("apps", expanding=True)),
           Finding.verdict == "deny")
    .group_by(Finding.app, Finding.sensor))


def _gather(session: Session, agent_id: str, apps: list[str]) -> dict[str, _Gathered]:
    gathered: dict[str, _Gathered] = {}
    for (app, sensor, rows, seen, open_rows, first, last, open_first, open_last,
         resolved) in session.execute(_GATHER, {"agent_id": agent_id, "apps": apps}):
        one = gathered.setdefault(app, _Gathered())
        one.findings += rows
        one.open_findings += open_rows or 0
        one.counts[sensor] = int(seen or 0)
        one.first_seen = _least(one.first_seen, _aware(first))
        one.last_seen = _most(one.last_seen, _aware(last))
        one.open_first_seen = _least(one.open_first_seen, _aware(open_first))
        one.open_last_seen = _least(one.open_last_seen, _aware(open_last))
        one.resolved_at = _most(one.resolved_at, _aware(resolved))
    return gathered


def _new(agent_id: str, app: str, facts: _Gathered) -> Violation:
    assert facts.first_seen is not None and facts.last_seen is not None
    is_open = facts.open_findings > 0
    row = Violation(agent_id=agent_id, app=app, triage="new",
                    opened_at=facts.open_first_seen if is_open else facts.first_seen,
                    first_seen=facts.first_seen, last_seen=facts.last_seen)
    _copy(row, facts)
    return row


def _update(row: Violation, facts: _Gathered) -> None:
    was_open = row.status == "open"
    _copy(row, facts)
    if row.status == "open" and not was_open:
        # Back after it was resolved: a new episode, and a fresh look for reviewers who had
        # closed it (as a reopened finding gets).
        assert facts.open_last_seen is not None
        row.opened_at = max(facts.open_last_seen, row.opened_at)
        if row.triage == "resolved":
            row.triage = "new"


def _copy(row: Violation, facts: _Gathered) -> None:
    assert facts.first_seen is not None and facts.last_seen is not None
    row.first_seen = facts.first_seen
    row.last_seen = facts.last_seen
    row.findings = facts.findings
    row.open_findings = facts.open_findings
    row.sensor_counts = dict(sorted(facts.counts.items()))
    row.status = "open" if facts.open_findings else "resolved"
    row.resolved_at = None if facts.open_findings else (facts.resolved_at or facts.last_seen)


def _aware(value: dt.datetime | str | None) -> dt.datetime | None:
    # Aggregates over a CASE lose the column type on SQLite: text there, naive UTC.
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _least(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else max(a, b)


def get(session: Session, violation_id: int) -> Violation | None:
    return session.get(Violation, violation_id)


def findings_of(session: Session, row: Violation) -> list[Finding]:
    """The evidence: its deny findings, most recently seen first."""
    return list(session.scalars(
        sa.select(Finding).where(Finding.agent_id == row.agent_id, Finding.app == row.app,
                                 Finding.verdict == "deny")
        .order_by(Finding.last_seen.desc(), Finding.id.desc())))


def set_triage(
    session: Session, violation_id: int, state: str, comment: str | None, actor: str
) -> Violation | None:
    """The reviewers' verdict on a violation, given to each of its findings too; one audit
    entry names the violation and how many findings it carried. None if there is none."""
    if state not in TRIAGE_STATES:
        raise ValueError(f"unknown triage state {state!r}; use one of {', '.join(TRIAGE_STATES)}")
    row = session.get(Violation, violation_id, with_for_update=True)
    if row is None:
        return None
    before = _triage_of(row)
    now = utcnow()
    row.triage = state
    row.triage_comment = comment or None
    row.triage_by = actor
    row.triage_at = now
    changed = session.execute(
        sa.update(Finding)
        .where(Finding.agent_id == row.agent_id, Finding.app == row.app,
               Finding.verdict == "deny")
        .values(triage=state, triage_comment=comment or None, triage_by=actor, triage_at=now)
        .execution_options(synchronize_session="fetch"))
    after = {**_triage_of(row), "findings": int(getattr(changed, "rowcount", 0))}
    audit.record(session, actor, "violation.triage", f"violation:{row.id}", before=before,
                 after=after)
    return row


def _triage_of(row: Violation) -> dict[str, Any]:
    return {"triage": row.triage, "triage_comment": row.triage_comment,
            "triage_by": row.triage_by,
            "triage_at": row.triage_at.isoformat() if row.triage_at else None}


class Owner(Protocol):
    """What a violation's API shape shows of its machine: an Agent, or just these two."""

    @property
    def hostname(self) -> str: ...

    @property
    def group(self) -> str | None: ...


def as_dict(row: Violation, agent: Owner | None = None) -> dict[str, Any]:
    """The API shape of a violation; pass the agent to fill `host` and `group`."""
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "host": agent.hostname if agent else None,
        "group": agent.group if agent else None,
        "app": row.app,
        "status": row.status,
        "first_seen": row.first_seen.isoformat(),
        "last_seen": row.last_seen.isoformat(),
        "opened_at": row.opened_at.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "finding_count": row.findings,
        "open_finding_count": row.open_findings,
        # Sorted: JSONB hands keys back in its own order (shortest first).
        "sensor_counts": dict(sorted((row.sensor_counts or {}).items())),
        "sightings": sum(int(count) for count in (row.sensor_counts or {}).values()),
        "triage": row.triage,
        "triage_comment": row.triage_comment,
        "triage_by": row.triage_by,
        "triage_at": row.triage_at.isoformat() if row.triage_at else None,
    }
