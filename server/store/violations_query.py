"""Violation lists for people: filters, keyset pages, counts and exports.

The same shape as server.store.findings_query: `ViolationFilters` is the API's
query parameters and the dashboard's form, pages follow a keyset cursor in
(sort key, id) order (server.store.listing), and the export walks ids.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.models import Agent, Violation
from server.schemas.common import DEFAULT_LIMIT, MAX_LIMIT
from server.schemas.filters import VIOLATION_ORDERS as ORDERS
from server.schemas.filters import FilterError, ViolationFilters, ViolationOrder
from server.store import violations
from server.store.listing import CursorError, decode_cursor, encode_cursor, text_matches

__all__ = ["CursorError", "FilterError", "ViolationFilters", "ViolationOrder", "conditions",
           "count_violations", "query_violations"]

_SORT_COLUMNS: dict[str, Any] = {"last_seen": Violation.last_seen,
                                 "first_seen": Violation.first_seen}


def conditions(filters: ViolationFilters, paging: bool = True) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses; `paging` when they feed a page in index order, not a count."""
    where: list[sa.ColumnElement[bool]] = []
    for name, column in (("app", Violation.app), ("status", Violation.status),
                         ("triage", Violation.triage), ("agent_id", Violation.agent_id)):
        value = getattr(filters, name)
        if value is not None:
            where.append(column == value)
    # Agents first, as a sub-select: the planner then keeps walking the list's index
    # (see the same note in server.store.findings_query).
    if filters.host is not None:
        where.append(Violation.agent_id.in_(
            sa.select(Agent.id).where(text_matches(Agent.hostname, filters.host,
                                                   caseless=True))))
    if filters.group is not None and paging:
        # Per row, through the agents' primary key: a group holds thousands of machines,
        # and as an IN list SQLite fetched all their violations to sort them (820 ms at
        # 20,000 machines); this way it walks the list's index and stops at a page.
        where.append(sa.exists().where(Agent.id == Violation.agent_id,
                                       Agent.group == filters.group))
    elif filters.group is not None:
        # A count reads them all anyway: the IN list is then the cheaper (3x) plan.
        where.append(Violation.agent_id.in_(
            sa.select(Agent.id).where(Agent.group == filters.group)))
    if filters.since is not None:
        where.append(Violation.last_seen >= filters.since)
    if filters.until is not None:
        where.append(Violation.last_seen < filters.until)
    return where


def query_violations(
    session: Session,
    filters: ViolationFilters,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    order: str = "last_seen",
    descending: bool = True,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of violations (API shape, `host` and `group` filled) and the next cursor."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; use one of {', '.join(ORDERS)}")
    if not 1 <= limit <= MAX_LIMIT * 10:
        raise ValueError(f"limit {limit} is out of range")
    kind = f"violations:{order}:{'desc' if descending else 'asc'}"
    sort = _SORT_COLUMNS.get(order)
    keys: list[Any] = [Violation.id] if sort is None else [sort, Violation.id]
    # Violations alone, then their agents: joined, SQLite's planner walked the 20,000 agents
    # and sorted every violation (1.6 s) instead of walking the (last_seen, id) index.
    query = sa.select(Violation).where(*conditions(filters))
    if cursor:
        after = _cursor_key(cursor, kind, order)
        bound: Any = sa.tuple_(*keys) if len(keys) > 1 else keys[0]
        start: Any = tuple(after) if len(after) > 1 else after[0]
        query = query.where(bound < start if descending else bound > start)
    query = query.order_by(*(key.desc() if descending else key.asc() for key in keys))
    rows = list(session.scalars(query.limit(limit + 1)))
    # Two columns, not whole agents: at 500 a page, loading Agent objects (and their JSON
    # columns) cost as much as the violations themselves.
    owners = {agent_id: _Owner(hostname, group) for agent_id, hostname, group in session.execute(
        sa.select(Agent.id, Agent.hostname, Agent.group)
        .where(Agent.id.in_({row.agent_id for row in rows[:limit]})))}
    page = [violations.as_dict(row, owners.get(row.agent_id)) for row in rows[:limit]]
    if len(rows) <= limit:
        return page, None
    last = rows[limit - 1]
    key: list[str | int] = [last.id] if order == "id" else [
        (last.last_seen if order == "last_seen" else last.first_seen).isoformat(), last.id]
    return page, encode_cursor(kind, key)


@dataclass(frozen=True)
class _Owner:
    hostname: str
    group: str | None


def _cursor_key(cursor: str, kind: str, order: str) -> list[Any]:
    if order == "id":
        return decode_cursor(cursor, kind, (int,))
    value, violation_id = decode_cursor(cursor, kind, (str, int))
    try:
        return [dt.datetime.fromisoformat(value), violation_id]
    except ValueError as exc:
        raise CursorError("the cursor is not one this server handed out") from exc


def count_violations(session: Session, filters: ViolationFilters) -> int:
    query = sa.select(sa.func.count()).select_from(Violation)
    return session.scalar(query.where(*conditions(filters, paging=False))) or 0

