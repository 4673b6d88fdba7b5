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

from collections.abc import Iterable
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from server.db import utcnow
from server.models import TRIAGE_STATES, Finding, Violation
from server.models.base import JSONType
from server.store import audit


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
    existing = list(session.scalars(_LOCK, {"owner_id": agent_id, "apps": wanted}))
    # Gathered and written by the database, one statement per kind of change: a batch
    # usually only updates (one statement), and no row comes into Python.
    if existing:
        kept = set(session.scalars(_UPDATE, {"owner_id": agent_id, "apps": existing}))
        gone = [app for app in existing if app not in kept]
        if gone:
            session.execute(_DELETE, {"owner_id": agent_id, "apps": gone})
    missing = [app for app in wanted if app not in existing]
    if missing:
        # Apps with no deny finding here gather nothing, so get no row. Two batches adding
        # the same one at once: the second fails the unique key and is retried by its caller.
        session.execute(_INSERT, {"owner_id": agent_id, "apps": missing})
    # The statements bypass the ORM: violations a caller already holds are read again on
    # next use (not filtered by agent and app, which would read an expired row to check).
    for row in list(session.identity_map.values()):
        if isinstance(row, Violation):
            session.expire(row)


class _ObjectAgg(FunctionElement[Any]):
    """`{key: value, ..}` of a group's rows as the column's JSON: PostgreSQL's
    jsonb_object_agg, SQLite's json_group_object."""

    type = JSONType
    inherit_cache = True


@compiles(_ObjectAgg)
def _object_agg(element: _ObjectAgg, compiler: SQLCompiler, **kw: Any) -> str:
    return f"jsonb_object_agg({compiler.process(element.clauses, **kw)})"


@compiles(_ObjectAgg, "sqlite")
def _object_agg_sqlite(element: _ObjectAgg, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_object({compiler.process(element.clauses, **kw)})"


# Built once: ingest refreshes on every batch, and building these cost about what running
# them does.
_TABLE = cast(sa.Table, Violation.__table__)
_FINDINGS = cast(sa.Table, Finding.__table__)
# Not "agent_id": INSERT and UPDATE keep column names for their own parameters.
_AGENT = sa.bindparam("owner_id", type_=sa.String)
_APPS: sa.BindParameter[Any] = sa.bindparam("apps", expanding=True)
_LOCK = (sa.select(_TABLE.c.app)
         .where(_TABLE.c.agent_id == _AGENT, _TABLE.c.app.in_(_APPS))
         .order_by(_TABLE.c.app).with_for_update())


def _gathered() -> sa.Subquery:
    """What each (agent, app)'s deny findings say, summed over sensors: one row per app."""
    is_open = _FINDINGS.c.status == "open"
    per_sensor = (
        sa.select(_FINDINGS.c.app, _FINDINGS.c.sensor,
                  sa.func.count().label("rows"),
                  sa.func.sum(_FINDINGS.c.count).label("seen"),
                  sa.func.sum(sa.case((is_open, 1), else_=0)).label("open_rows"),
                  sa.func.min(_FINDINGS.c.first_seen).label("first_seen"),
                  sa.func.max(_FINDINGS.c.last_seen).label("last_seen"),
                  # The earliest first_seen and last_seen of its open findings: when it
                  # opened, for a new violation and for one that reopens.
                  sa.func.min(sa.case((is_open, _FINDINGS.c.first_seen))).label("open_first"),
                  sa.func.min(sa.case((is_open, _FINDINGS.c.last_seen))).label("open_last"),
                  sa.func.max(_FINDINGS.c.resolved_at).label("resolved_at"))
        .where(_FINDINGS.c.agent_id == _AGENT,
               # `app || ''` is the app, but not a column an index can look up: SQLite
               # (which keeps no statistics) otherwise reads every finding of the app
               # fleet-wide through ix_findings_app_status, on every batch, instead of this
               # machine's.
               _FINDINGS.c.app.concat("").in_(_APPS),
               _FINDINGS.c.verdict == "deny")
        .group_by(_FINDINGS.c.app, _FINDINGS.c.sensor)
        .subquery("per_sensor"))
    return (
        sa.select(per_sensor.c.app,
                  sa.func.sum(per_sensor.c.rows).label("findings"),
                  sa.func.sum(per_sensor.c.open_rows).label("open_findings"),
                  _ObjectAgg(per_sensor.c.sensor, per_sensor.c.seen).label("sensor_counts"),
                  sa.func.min(per_sensor.c.first_seen).label("first_seen"),
                  sa.func.max(per_sensor.c.last_seen).label("last_seen"),
                  sa.func.min(per_sensor.c.open_first).label("open_first"),
                  sa.func.min(per_sensor.c.open_last).label("open_last"),
                  sa.func.max(per_sensor.c.resolved_at).label("resolved_at"))
        .group_by(per_sensor.c.app)
        .subquery("gathered"))


def _summary(gathered: sa.Subquery) -> dict[str, Any]:
    """The columns a violation copies from its findings, as SQL over `gathered`."""
    is_open = gathered.c.open_findings > 0
    return {
        "first_seen": gathered.c.first_seen,
        "last_seen": gathered.c.last_seen,
        "findings": gathered.c.findings,
        "open_findings": gathered.c.open_findings,
        "sensor_counts": gathered.c.sensor_counts,
        "status": sa.case((is_open, "open"), else_="resolved"),
        "resolved_at": sa.case((is_open, None),
                               else_=sa.func.coalesce(gathered.c.resolved_at,
                                                      gathered.c.last_seen)),
    }


def _update() -> sa.Update:
    gathered = _gathered()
    # SET sees the row as it was: back after it was resolved is a new episode, and a fresh
    # look for reviewers who had closed it (as a reopened finding gets).
    reopens = sa.and_(gathered.c.open_findings > 0, _TABLE.c.status != "open")
    return (
        sa.update(_TABLE)
        .where(_TABLE.c.agent_id == _AGENT, _TABLE.c.app == gathered.c.app)
        .values(**_summary(gathered),
                opened_at=sa.case(
                    (sa.and_(reopens, gathered.c.open_last > _TABLE.c.opened_at),
                     gathered.c.open_last),
                    else_=_TABLE.c.opened_at),
                triage=sa.case((sa.and_(reopens, _TABLE.c.triage == "resolved"), "new"),
                               else_=_TABLE.c.triage))
        .returning(_TABLE.c.app))


def _insert() -> sa.Insert:
    gathered = _gathered()
    columns = {
        "agent_id": _AGENT,
        "app": gathered.c.app,
        **_summary(gathered),
        "opened_at": sa.case((gathered.c.open_findings > 0, gathered.c.open_first),
                             else_=gathered.c.first_seen),
        "triage": sa.literal("new"),
    }
    return sa.insert(_TABLE).from_select(
        list(columns), sa.select(*(value.label(name) for name, value in columns.items())))


_UPDATE = _update()
_INSERT = _insert()
_DELETE = sa.delete(_TABLE).where(_TABLE.c.agent_id == _AGENT, _TABLE.c.app.in_(_APPS))


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
