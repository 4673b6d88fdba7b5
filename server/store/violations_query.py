"""Violation lists for people: filters, keyset pages, counts and exports.

The same shape as server.store.findings_query: `ViolationFilters` is the API's
query parameters and the dashboard's form, pages follow a keyset cursor in
(sort key, id) order (server.store.listing), and the export walks ids.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import sqlalchemy as sa
from pydantic import AfterValidator, Field, ValidationInfo, field_validator
from sqlalchemy.orm import Session

from policies.vocabulary import FindingStatus, TriageState
from server.models import Agent, Violation
from server.schemas.common import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Query,
    TextFilter,
    TimeFilter,
    blank_is_any,
)
from server.store import violations
from server.store.listing import (
    CursorError,
    FilterError,
    decode_cursor,
    encode_cursor,
    filters_from_form,
    text_matches,
)

__all__ = ["CursorError", "FilterError", "ViolationFilters", "count_violations",
           "query_violations"]

ViolationOrder = Literal["last_seen", "first_seen", "id"]
ORDERS: tuple[str, ...] = get_args(ViolationOrder)

_SORT_COLUMNS: dict[str, Any] = {"last_seen": Violation.last_seen,
                                 "first_seen": Violation.first_seen}


class ViolationFilters(Query):
    """Which violations to show; None means "any". `since` and `until` bound `last_seen`.

    `host` matches the hostname without regard to case, exactly or by prefix
    ending in `*`, as the findings list does.
    """

    app: TextFilter = None
    status: Annotated[Literal[FindingStatus, ""] | None,
                      AfterValidator(blank_is_any)] = None
    triage: Annotated[Literal[TriageState, ""] | None, AfterValidator(blank_is_any)] = None
    host: TextFilter = Field(default=None, description="exact, or a prefix ending in *; "
                                                       "ignores case")
    group: TextFilter = None
    agent_id: TextFilter = None
    since: TimeFilter = Field(default=None, description="last_seen at or after")
    until: TimeFilter = Field(default=None, description="last_seen before; later than since")

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        since = info.data.get("since")
        if since is not None and until is not None and since >= until:
            raise ValueError("must be later than since")
        return until

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(ViolationFilters.model_fields)

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> ViolationFilters:
        """Filters from a form; FilterError names every bad field."""
        return filters_from_form(ViolationFilters, params)

    def as_query(self) -> dict[str, str]:
        query: dict[str, str] = {}
        for name in self.names():
            value = getattr(self, name)
            if value is not None:
                query[name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return query

    def conditions(self, paging: bool = True) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses; `paging` when they feed a page in index order, not a count."""
        where: list[sa.ColumnElement[bool]] = []
        for name, column in (("app", Violation.app), ("status", Violation.status),
                             ("triage", Violation.triage), ("agent_id", Violation.agent_id)):
            value = getattr(self, name)
            if value is not None:
                where.append(column == value)
        # Agents first, as a sub-select: the planner then keeps walking the list's index
        # (see the same note in server.store.findings_query).
        if self.host is not None:
            where.append(Violation.agent_id.in_(
                sa.select(Agent.id).where(text_matches(Agent.hostname, self.host,
                                                       caseless=True))))
        if self.group is not None and paging:
            # Per row, through the agents' primary key: a group holds thousands of machines,
            # and as an IN list SQLite fetched all their violations to sort them (820 ms at
            # 20,000 machines); this way it walks the list's index and stops at a page.
            where.append(sa.exists().where(Agent.id == Violation.agent_id,
                                           Agent.group == self.group))
        elif self.group is not None:
            # A count reads them all anyway: the IN list is then the cheaper (3x) plan.
            where.append(Violation.agent_id.in_(
                sa.select(Agent.id).where(Agent.group == self.group)))
        if self.since is not None:
            where.append(Violation.last_seen >= self.since)
        if self.until is not None:
            where.append(Violation.last_seen < self.until)
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
    query = sa.select(Violation).where(*filters.conditions())
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
    return session.scalar(query.where(*filters.conditions(paging=False))) or 0

