"""Compliance over time: a daily snapshot per group, its history, and time to remediate.

A snapshot says how one group of machines stood on one UTC day: how many
were compliant (no open violation), how many had one, how many had gone
silent, how many in all (revoked machines do not count), and the open
violations by app. Taking the day's snapshot again replaces it, so a task
that runs twice, or a test that asks on demand, never duplicates a day.
Machines in no group are the group "" here and `null` in the API.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.models import Agent, ComplianceSnapshot, Violation

NO_GROUP = ""


def take_snapshot(session: Session, now: dt.datetime, silent_after: dt.timedelta) -> int:
    """Record (or re-record) today's snapshot of every group; how many groups it holds.

    Each group's row also says how many of its violations were resolved since the
    previous snapshot (of an earlier day) was taken, or since midnight for the first one,
    and their median days to remediate: consecutive snapshots cover every resolution once,
    whatever days the server was down, and the history never reads violations."""
    day = now.astimezone(dt.UTC).date()
    rows = measure(session, now, silent_after)
    previous = session.scalar(sa.select(sa.func.max(ComplianceSnapshot.taken_at))
                              .where(ComplianceSnapshot.day < day))
    since = previous or dt.datetime.combine(day, dt.time(), dt.UTC)
    remediated = _remediation_spans(session, since, now)
    session.execute(sa.delete(ComplianceSnapshot).where(ComplianceSnapshot.day == day))
    for group, facts in sorted(rows.items()):
        spans = remediated.get(group, [])
        session.add(ComplianceSnapshot(
            day=day, group=group, total=facts["total"], silent=facts["silent"],
            with_open_violation=facts["with_open_violation"], compliant=facts["compliant"],
            open_by_app=facts["open_by_app"], taken_at=now, resolved=len(spans),
            median_days_to_remediate=statistics.median(spans) if spans else None))
    session.flush()
    return len(rows)


def measure(session: Session, now: dt.datetime,
            silent_after: dt.timedelta) -> dict[str, dict[str, Any]]:
    """How each group stands now: what a snapshot taken now would record."""
    group_of = sa.func.coalesce(Agent.group, NO_GROUP)
    live = Agent.revoked_at.is_(None)
    silent = sa.case((Agent.last_seen < now - silent_after, 1), else_=0)
    rows: dict[str, dict[str, Any]] = {}
    for group, total, silent_count in session.execute(
            sa.select(group_of, sa.func.count(), sa.func.sum(silent)).where(live)
            .group_by(group_of)):
        rows[group] = {"total": total, "silent": int(silent_count or 0),
                       "with_open_violation": 0, "open_by_app": {}}
    open_violation = sa.and_(Violation.status == "open", live)
    for group, machines in session.execute(
            sa.select(group_of, sa.func.count(sa.distinct(Violation.agent_id)))
            .join(Agent, Agent.id == Violation.agent_id).where(open_violation)
            .group_by(group_of)):
        rows[group]["with_open_violation"] = machines
    for group, app, count in session.execute(
            sa.select(group_of, Violation.app, sa.func.count())
            .join(Agent, Agent.id == Violation.agent_id).where(open_violation)
            .group_by(group_of, Violation.app)):
        rows[group]["open_by_app"][app] = count
    for facts in rows.values():
        facts["compliant"] = facts["total"] - facts["with_open_violation"]
        facts["open_by_app"] = dict(sorted(facts["open_by_app"].items()))
    return rows


def has_snapshot(session: Session, day: dt.date) -> bool:
    return session.scalar(sa.select(sa.func.count()).select_from(ComplianceSnapshot)
                          .where(ComplianceSnapshot.day == day)) != 0


def history(session: Session, today: dt.date, days: int,
            group: str | None = None) -> list[dict[str, Any]]:
    """The snapshots of the last `days` days (today included), oldest first: one group's, or
    the fleet's (every group summed) when `group` is None. Days never snapshotted are left
    out rather than shown as zero."""
    first = today - dt.timedelta(days=days - 1)
    query = sa.select(ComplianceSnapshot).where(ComplianceSnapshot.day >= first,
                                                ComplianceSnapshot.day <= today)
    if group is not None:
        query = query.where(ComplianceSnapshot.group == group)
    summed: dict[dt.date, dict[str, Any]] = {}
    for row in session.scalars(query.order_by(ComplianceSnapshot.day)):
        day = summed.setdefault(row.day, {"day": row.day.isoformat(), "compliant": 0,
                                          "with_open_violation": 0, "silent": 0, "total": 0,
                                          "open_by_app": defaultdict(int)})
        for name in ("compliant", "with_open_violation", "silent", "total"):
            day[name] += getattr(row, name)
        for app, count in (row.open_by_app or {}).items():
            day["open_by_app"][app] += int(count)
    points = []
    for day in summed.values():
        day["open_by_app"] = dict(sorted(day["open_by_app"].items()))
        day["compliant_percent"] = _percent(day["compliant"], day["total"])
        points.append(day)
    return points


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 100.0


def groups(session: Session) -> list[str]:
    """Every group a machine is in (not the machines in no group)."""
    return sorted(group for group in session.scalars(
        sa.select(Agent.group).distinct().where(Agent.group.is_not(None))) if group)


def _remediation_spans(session: Session, since: dt.datetime,
                       until: dt.datetime) -> dict[str, list[float]]:
    """Per group ("" for none): the days from opening to resolution of each violation
    resolved in [since, until)."""
    # The span in days computed by the database: converting two timestamps per row in Python
    # cost more than the query at 20,000 machines.
    if session.get_bind().dialect.name == "postgresql":
        span: Any = sa.extract("epoch", Violation.resolved_at - Violation.opened_at) / 86400
    else:
        span = sa.func.julianday(Violation.resolved_at) - sa.func.julianday(Violation.opened_at)
    query = (sa.select(Agent.group, span)
             .join(Agent, Agent.id == Violation.agent_id)
             .where(Violation.status == "resolved", Violation.resolved_at >= since,
                    Violation.resolved_at < until))
    spans: dict[str, list[float]] = defaultdict(list)
    for owner, days in session.execute(query):
        if days is not None:
            spans[owner or NO_GROUP].append(max(float(days), 0.0))
    return spans


def time_to_remediate(session: Session, today: dt.date, days: int,
                      group: str | None = None) -> list[dict[str, Any]]:
    """Per group: the median days from a violation's opening to its resolution over the
    snapshots of the last `days` days, and how many were resolved; worst (slowest) first.

    Read from the snapshots, a few rows a day: the median is that of the daily medians,
    each counted once per violation it stands for — the exact median when one day holds
    them all, and close to it otherwise (days are not mixed within a median)."""
    first = today - dt.timedelta(days=days - 1)
    query = (sa.select(ComplianceSnapshot.group, ComplianceSnapshot.resolved,
                       ComplianceSnapshot.median_days_to_remediate)
             .where(ComplianceSnapshot.day >= first, ComplianceSnapshot.day <= today,
                    ComplianceSnapshot.resolved > 0))
    if group is not None:
        query = query.where(ComplianceSnapshot.group == group)
    daily: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for owner, resolved, median in session.execute(query):
        if median is not None:  # a figure is recorded whenever one was resolved
            daily[owner].append((float(median), int(resolved)))
    rows = [{"group": name or None, "resolved": sum(count for _, count in medians),
             "median_days": round(weighted_median(medians), 2)}
            for name, medians in daily.items()]
    return sorted(rows, key=lambda row: (-row["median_days"], row["group"] or ""))


def weighted_median(values: list[tuple[float, int]]) -> float:
    """The median of the values, each (value, weight) counted `weight` times (weights > 0)."""
    ordered = sorted(values)
    total = sum(weight for _, weight in ordered)
    if not total:
        raise ValueError("no weight to take a median of")
    # The two middle positions (the same one when the total is odd), found by running sums.
    wanted = [(total - 1) // 2, total // 2]
    found: list[float] = []
    seen = 0
    for value, weight in ordered:
        seen += weight
        while wanted and wanted[0] < seen:
            found.append(value)
            wanted.pop(0)
    return (found[0] + found[1]) / 2


def current_by_group(session: Session, now: dt.datetime,
                     silent_after: dt.timedelta) -> list[dict[str, Any]]:
    """How each group stands now (what today's snapshot would say), worst first: the
    lowest share of compliant machines, then the most machines with a violation."""
    rows = [{"group": group or None, **facts,
             "compliant_percent": _percent(facts["compliant"], facts["total"])}
            for group, facts in measure(session, now, silent_after).items()]
    return sorted(rows, key=lambda row: (row["compliant_percent"], -row["with_open_violation"],
                                         row["group"] or ""))


def prune_snapshots(session: Session, before: dt.date) -> int:
    """Delete the snapshots of days before `before` (the retention setting); how many."""
    result = session.execute(sa.delete(ComplianceSnapshot).where(ComplianceSnapshot.day < before)
                             .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0))
