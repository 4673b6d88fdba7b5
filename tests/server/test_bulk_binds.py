"""server.store.bulk binds SQLite values itself: the text must be what SQLAlchemy's column
types would have bound, or stored times would stop comparing in time order with the rest."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from server.models import Event, Finding
from server.store import bulk

_INDIA = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize("value", [
    dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),          # no microseconds
    dt.datetime(2026, 1, 2, 3, 4, 5, 123, tzinfo=_INDIA),     # another zone: to UTC
    # UTC, but not the dt.UTC object: the converting path.
    dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=dt.timezone(dt.timedelta(0), "Z")),
    dt.datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),  # a short year
    None,
])
def test_times_bind_as_the_column_type_does(value: dt.datetime | None) -> None:
    dialect = sqlite.dialect()
    column_type = cast(sa.Table, Finding.__table__).c.first_seen.type
    expected = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert expected is not None
    assert bulk._sqlite_time(value) == expected(value)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        bulk._sqlite_time(dt.datetime(2026, 1, 2))


@pytest.mark.parametrize("value", [None, {}, {"a": [1, "é", None]}, [1, 2], "text"])
@pytest.mark.parametrize(("table", "column"), [
    (Finding.__table__, "evidence"), (Finding.__table__, "outcomes"),
    (Event.__table__, "payload"),
])
def test_json_binds_as_the_column_type_does(table: Any, column: str, value: Any) -> None:
    dialect = sqlite.dialect()
    expected = bulk.bound(table, column).type.dialect_impl(dialect).bind_processor(dialect)
    assert expected is not None
    assert bulk._sqlite_json(value) == expected(value)
