"""The fleet at a glance: agents by state, compliance, open findings, findings opened per day.

Each figure is one aggregate query, so the summary costs the same for ten
agents or twenty thousand. Days are UTC days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.vocabulary import AgentState
from server.models import Agent, Finding
from server.store import agents, findings
from server.store.known_apps import bounded_by_app

DEFAULT_DAYS = 30


def summary(
    session: Session, now: dt.datetime, silent_after: dt.timedelta, days: int = DEFAULT_DAYS,
    *, known_apps: Collection[str],
) -> dict[str, Any]:
    """`GET /api/v1/stats`: agents by state, compliance, open findings by app (ids outside
    `known_apps` as `other`: server.store.known_apps), per-day openings."""
    by_state = agents.count_by_state(session, now, silent_after)
    return {
        "agents": dict(by_state),
        "compliance": compliance(session, by_state),
        "open_findings_by_app": bounded_by_app(findings.open_counts_by_app(session),
                                               known_apps),
        "findings_per_day": findings_per_day(session, now, days),
    }


def compliance(session: Session, by_state: dict[AgentState, int]) -> dict[str, int]:
    """Of the agents not revoked: how many have no open deny finding, how many do, how many
    went silent (those count as compliant or not by their last report)."""
    with_open_deny = session.scalar(
        sa.select(sa.func.count(sa.distinct(Finding.agent_id)))
        .join(Agent, Agent.id == Finding.agent_id)
        .where(Finding.status == "open", Finding.verdict == "deny",
               Agent.revoked_at.is_(None))) or 0
    total = by_state["active"] + by_state["silent"]
    return {"compliant": total - with_open_deny, "with_open_deny": with_open_deny,
            "silent": by_state["silent"], "total": total,
            "cannot_notify": agents.count_cannot_notify(session)}


def findings_per_day(
    session: Session, now: dt.datetime, days: int = DEFAULT_DAYS
) -> list[dict[str, Any]]:
    """Findings first seen on each of the last `days` UTC days (today included), oldest first;
    days without any are listed with 0 so a chart needs no gap filling."""
    today = now.astimezone(dt.UTC).date()
    first_day = today - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first_day, dt.time(), dt.UTC)
    day = _utc_day(session, Finding.first_seen)
    counts = {str(key): count for key, count in session.execute(
        sa.select(day, sa.func.count()).where(Finding.first_seen >= start)
        .group_by(day))}
    return [{"day": (first_day + dt.timedelta(days=offset)).isoformat(),
             "opened": counts.get((first_day + dt.timedelta(days=offset)).isoformat(), 0)}
            for offset in range(days)]


def _utc_day(session: Session, column: Any) -> sa.ColumnElement[str]:
    """The UTC date of a timestamp column as 'YYYY-MM-DD' text, per dialect."""
    if session.get_bind().dialect.name == "postgresql":
        # timestamptz -> the wall-clock time in UTC, whatever the session's TimeZone.
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    # SQLite keeps naive UTC text (server.db.UTCDateTime); date() reads its first 10 chars.
    return sa.func.date(column)
