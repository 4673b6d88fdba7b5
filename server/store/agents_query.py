"""Agent lists for people: state, open findings and policy currency, page by page.

An agent's state is derived, not stored: `revoked` once an administrator
revoked it, `silent` when it has not checked in for `silent_after` (a few
check-in intervals), else `active` — the same rule as `agents.state`, here
also as SQL so a filter on it pages like any other.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.vocabulary import AgentState
from server.models import Agent, Finding, PolicyVersion
from server.schemas.filters import AgentFilters
from server.store import agents, policies, reenrollments
from server.store.listing import decode_cursor, encode_cursor, text_matches

STATES: tuple[str, ...] = get_args(AgentState)
_CURSOR_KIND = "agents:hostname:asc"


def conditions(filters: AgentFilters, now: dt.datetime,
               silent_after: dt.timedelta) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    cutoff = now - silent_after
    if filters.state == "revoked":
        where.append(Agent.revoked_at.is_not(None))
    elif filters.state == "silent":
        where += [Agent.revoked_at.is_(None), Agent.last_seen < cutoff]
    elif filters.state == "active":
        where += [Agent.revoked_at.is_(None), Agent.last_seen >= cutoff]
    if filters.group is not None:
        where.append(Agent.group == filters.group)
    if filters.host is not None:
        where.append(text_matches(Agent.hostname, filters.host, caseless=True))
    if filters.os is not None:
        where.append(Agent.os == filters.os)
    if filters.notify == "failing":
        where.append(Agent.notify_error.is_not(None))
    return where


def query_agents(
    session: Session,
    filters: AgentFilters,
    now: dt.datetime,
    silent_after: dt.timedelta,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of agents by hostname (see `describe`), and the next page's cursor or None.

    Raises server.store.listing.CursorError for a cursor this list did not hand out.
    """
    query = sa.select(Agent).where(*conditions(filters, now, silent_after))
    if cursor:
        hostname, agent_id = decode_cursor(cursor, _CURSOR_KIND, (str, str))
        query = query.where(sa.tuple_(Agent.hostname, Agent.id) > (hostname, agent_id))
    rows = list(session.scalars(query.order_by(Agent.hostname, Agent.id).limit(limit + 1)))
    page = describe(session, rows[:limit], now, silent_after)
    if len(rows) <= limit:
        return page, None
    last = rows[limit - 1]
    return page, encode_cursor(_CURSOR_KIND, [last.hostname, last.id])


def count_agents(session: Session, filters: AgentFilters, now: dt.datetime,
                 silent_after: dt.timedelta) -> int:
    query = sa.select(sa.func.count()).select_from(Agent)
    return session.scalar(query.where(*conditions(filters, now, silent_after))) or 0


def describe(
    session: Session, rows: list[Agent], now: dt.datetime, silent_after: dt.timedelta
) -> list[dict[str, Any]]:
    """Agents in the API shape: `agents.as_dict` plus `state`, `open_findings`,
    `policy_version_number` (of the bundle it runs, when known), `policy_current` and
    `reenrollment` (the request awaiting approval, or None).

    Four queries whatever the number of agents: their open findings, the version
    numbers of the bundles they run, the active policy and pending re-enrollments.
    """
    ids = [row.id for row in rows]
    open_counts: dict[str, int] = {}
    if ids:
        open_counts = dict(session.execute(
            sa.select(Finding.agent_id, sa.func.count())
            .where(Finding.agent_id.in_(ids), Finding.status == "open")
            .group_by(Finding.agent_id)).all())
    versions = {row.policy_version for row in rows if row.policy_version}
    numbers: dict[str, int] = {}
    if versions:
        # The same bundle may be stored twice (pushed again); name its newest number.
        numbers = dict(session.execute(
            sa.select(PolicyVersion.version, sa.func.max(PolicyVersion.number))
            .where(PolicyVersion.version.in_(versions))
            .group_by(PolicyVersion.version)).all())
    active = policies.active(session)
    pending = reenrollments.for_agents(session, ids)
    described = []
    for row in rows:
        view = agents.as_dict(row)
        view["state"] = agents.state(row, now, silent_after)
        view["open_findings"] = open_counts.get(row.id, 0)
        view["policy_version_number"] = numbers.get(row.policy_version or "")
        view["policy_current"] = (active is not None and row.policy_version == active.version)
        request = pending.get(row.id)
        view["reenrollment"] = ({**reenrollments.as_dict(request), "agent_hostname": row.hostname}
                                if request else None)
        described.append(view)
    return described
