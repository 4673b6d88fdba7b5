"""The fleet at a glance: agents by state, compliance, open findings, findings opened per day.

A handful of reads, each counting an index range or making one pass, never a
probe or a join per row: at 100,000 findings, GROUP BY with a per-row day
function and a join per open finding made `GET /api/v1/stats` take 120-250 ms,
and an EXISTS per agent another 35 ms of CPU at 20,000 agents (see
docs/benchmarks.md). Days are UTC days.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.vocabulary import AgentState
from server.models import Agent, Finding
from server.store import findings
from server.store.known_apps import bounded_by_app

DEFAULT_DAYS = 30


def summary(
    session: Session, now: dt.datetime, silent_after: dt.timedelta, days: int = DEFAULT_DAYS,
    *, known_apps: Collection[str],
) -> dict[str, Any]:
    """`GET /api/v1/stats`: agents by state, compliance, open findings by app (ids outside
    `known_apps` as `other`: server.store.known_apps), per-day openings."""
    by_state, fleet_compliance = fleet(session, now, silent_after)
    return {
        "agents": dict(by_state),
        "compliance": fleet_compliance,
        "open_findings_by_app": bounded_by_app(findings.open_counts_by_app(session),
                                               known_apps),
        "findings_per_day": findings_per_day(session, now, days),
    }


def fleet(session: Session, now: dt.datetime,
          silent_after: dt.timedelta) -> tuple[dict[AgentState, int], dict[str, int]]:
    """Agents by state (as `agents.count_by_state`), and compliance: of the agents not
    revoked, how many have no open deny finding, how many do, how many went silent (those
    count as compliant or not by their last report), how many cannot notify their users.

    One statement, whatever the fleet's size: a pass over the agents counting everything at
    once, and the distinct agents of the open deny findings, read off the (status, verdict,
    agent_id) index. Probing that index once per agent (an EXISTS per agent) cost six times
    as much at 20,000 agents (35 ms of SQLite's CPU against 6 ms).
    """
    total, revoked, silent, cannot_notify, revoked_with_open_deny, with_open_deny = (
        session.execute(_fleet_statement(), {"silent_before": now - silent_after}).one())
    with_open_deny = (with_open_deny or 0) - revoked_with_open_deny
    by_state: dict[AgentState, int] = {"active": total - revoked - silent, "silent": silent,
                                       "revoked": revoked}
    counted = total - revoked
    return by_state, {"compliant": counted - with_open_deny, "with_open_deny": with_open_deny,
                      "silent": silent, "total": counted, "cannot_notify": cannot_notify}


# The statements below are built once and reused with new parameters: building these
# expressions anew (30 subqueries for the days) cost SQLAlchemy more CPU than SQLite took
# to run them (8 of 12 ms for the days at 120,000 findings; docs/benchmarks.md).

_TIME = Finding.__table__.c.first_seen.type


@functools.cache
def _fleet_statement() -> sa.Select[Any]:
    live = Agent.revoked_at.is_(None)
    is_open_deny = (Finding.status == "open", Finding.verdict == "deny")
    open_deny = sa.select(Finding.id).where(Finding.agent_id == Agent.id,
                                            *is_open_deny).exists()
    silent_before = sa.bindparam("silent_before", type_=_TIME)
    return sa.select(
        sa.func.count(),
        sa.func.count().filter(Agent.revoked_at.is_not(None)),
        sa.func.count().filter(live, Agent.last_seen < silent_before),
        sa.func.count().filter(live, Agent.notify_error.is_not(None)),
        # Revoked machines are few: the EXISTS runs for those alone.
        sa.func.count().filter(Agent.revoked_at.is_not(None), open_deny),
        # Uncorrelated, so run once, in the same round trip. DISTINCT in a subquery rather
        # than COUNT(DISTINCT): PostgreSQL then reads the agents in index order instead of
        # sorting them again (8 -> 6.5 ms at 36,000 open deny findings).
        sa.select(sa.func.count()).select_from(
            sa.select(Finding.agent_id).where(*is_open_deny).distinct().subquery())
        .scalar_subquery())


def findings_per_day(
    session: Session, now: dt.datetime, days: int = DEFAULT_DAYS
) -> list[dict[str, Any]]:
    """Findings first seen on each of the last `days` UTC days (today included), oldest first;
    days without any are listed with 0 so a chart needs no gap filling."""
    today = now.astimezone(dt.UTC).date()
    first_day = today - dt.timedelta(days=days - 1)
    bounds = [dt.datetime.combine(first_day + dt.timedelta(days=offset), dt.time(), dt.UTC)
              for offset in range(days + 1)]
    if session.get_bind().dialect.name == "postgresql":
        found = dict.fromkeys(range(days), 0)
        for day_start, count in session.execute(
                _days_binned_statement(), {"start": bounds[0], "end": bounds[-1]}):
            found[(day_start.astimezone(dt.UTC).date() - first_day).days] = count
        counts = [found[offset] for offset in range(days)]
    else:
        counts = list(session.execute(
            _days_counted_statement(days),
            {f"bound_{index}": bound for index, bound in enumerate(bounds)}).one())
    return [{"day": (first_day + dt.timedelta(days=offset)).isoformat(), "opened": count}
            for offset, count in enumerate(counts)]


@functools.cache
def _days_binned_statement() -> sa.Select[dt.datetime, int]:
    # PostgreSQL: one pass over the first_seen index, each time put in its UTC day by
    # date_bin (whole days from a UTC midnight: arithmetic on the stored instant, no time
    # zone), grouped in a hash. width_bucket among the 31 day bounds cost ~25% more, the
    # UTC date of each time (timezone() and a cast) 3x; 30 range counts cost less on a
    # freshly vacuumed table but 3x more where the visibility map is stale (heap fetches).
    start = sa.bindparam("start", type_=_TIME)
    day = sa.func.date_bin(sa.literal_column("interval '1 day'"), Finding.first_seen, start,
                           type_=sa.DateTime(timezone=True))
    return (sa.select(day, sa.func.count())
            .where(Finding.first_seen >= start,
                   Finding.first_seen < sa.bindparam("end", type_=_TIME))
            .group_by(day))


@functools.lru_cache(maxsize=4)
def _days_counted_statement(days: int) -> sa.Select[Any]:
    # SQLite: a count of each day's range of the first_seen index, in one statement: no
    # per-row date() and no temporary B-tree for GROUP BY (10x faster at 100,000).
    bounds = [sa.bindparam(f"bound_{index}", type_=_TIME) for index in range(days + 1)]
    return sa.select(*[sa.select(sa.func.count()).select_from(Finding)
                       .where(Finding.first_seen >= start, Finding.first_seen < end)
                       .scalar_subquery()
                       for start, end in itertools.pairwise(bounds)])
