"""Rate-limit rows: each limited key's recent failure times (server.throttling decides).

A key's row is locked before it is read for a decision: `lock` is one
INSERT ... ON CONFLICT DO UPDATE ... RETURNING per key, which on PostgreSQL
takes the row's lock whether the row was there or not (a plain SELECT ... FOR
UPDATE cannot lock a row that does not exist yet, so two first failures would
both pass). A second process deciding on the same key waits at that statement
until the first commits, then reads what it wrote. On SQLite the write
transaction (BEGIN IMMEDIATE) already holds the whole database. Keys are
locked in sorted order, so two attempts locking the same two keys never
deadlock.

Pruning skips rows another transaction holds (FOR UPDATE SKIP LOCKED on
PostgreSQL), so it never waits on, nor deadlocks with, an attempt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.models import ThrottleFailures

_TABLE = cast(sa.Table, ThrottleFailures.__table__)


def lock(session: Session, scope: str, keys: Iterable[str]) -> dict[str, list[float]]:
    """Lock each key's row (creating an empty one if need be) until the transaction ends;
    the failure times each holds, oldest first."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    held: dict[str, list[float]] = {}
    for key in sorted(set(keys)):
        row = insert(_TABLE).values(scope=scope, key=key, failures="[]", last_failed_at=0.0)
        # A no-op update: it is there for the row lock (and RETURNING) on a conflict.
        statement = row.on_conflict_do_update(
            index_elements=["scope", "key"],
            set_={"last_failed_at": _TABLE.c.last_failed_at},
        ).returning(_TABLE.c.failures)
        held[key] = _times(session.execute(statement).scalar_one())
    return held


def read(session: Session, scope: str, key: str) -> list[float]:
    """A key's failure times, oldest first, without locking (for a look, not a decision)."""
    text = session.execute(sa.select(_TABLE.c.failures).where(
        _TABLE.c.scope == scope, _TABLE.c.key == key)).scalar_one_or_none()
    return [] if text is None else _times(text)


def write(session: Session, scope: str, key: str, failures: list[float]) -> None:
    """Replace a locked key's failure times (oldest first)."""
    session.execute(sa.update(_TABLE).where(_TABLE.c.scope == scope, _TABLE.c.key == key)
                    .values(failures=json.dumps(failures),
                            last_failed_at=failures[-1] if failures else 0.0))


def delete(session: Session, scope: str, key: str) -> None:
    session.execute(sa.delete(_TABLE).where(_TABLE.c.scope == scope, _TABLE.c.key == key))


def prune(session: Session, scope: str, before: float) -> int:
    """Delete the rows of `scope` whose newest failure is older than `before` (epoch
    seconds), except rows an attempt holds right now; how many were deleted."""
    stale = (sa.select(_TABLE.c.key)
             .where(_TABLE.c.scope == scope, _TABLE.c.last_failed_at < before)
             .with_for_update(skip_locked=True))
    result = session.execute(sa.delete(_TABLE).where(_TABLE.c.scope == scope,
                                                     _TABLE.c.key.in_(stale)))
    return int(getattr(result, "rowcount", 0) or 0)


def count(session: Session, scope: str | None = None) -> int:
    """Rows held (for tests and metrics)."""
    query = sa.select(sa.func.count()).select_from(_TABLE)
    if scope is not None:
        query = query.where(_TABLE.c.scope == scope)
    return int(session.execute(query).scalar_one())


def _times(text: str) -> list[float]:
    return [float(value) for value in json.loads(text)]
