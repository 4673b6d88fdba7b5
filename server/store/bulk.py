"""One batch's rows into one table with one statement, on SQLite and on PostgreSQL.

SQLAlchemy sends many rows as one `INSERT .. VALUES (..), (..)` with a parameter per
value. psycopg parses every statement longer than 4 KiB or with more than 50 parameters
in Python, on every run (shorter ones it caches): about 9 ms for 40 findings, far more
than PostgreSQL spends storing them; arrays of JSON text (`unnest`) cost as much again in
psycopg's escaping. So on PostgreSQL the rows go as one JSON document, one parameter
that PostgreSQL turns into rows of the table's own type (`json_populate_recordset`).
On SQLite the rows go as one `INSERT .. VALUES` straight to
the driver, each value bound as its column's type binds it: SQLAlchemy's own handling of
each row's parameters cost more than SQLite spends storing them (the same rows as one
JSON document through `json_each` measured no faster).
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from server.db import UTCDateTime


class BulkInsert:
    """`INSERT` of many rows into `table`'s `columns`, answering each new row's `returning`
    columns; with `skip_existing` (a unique key's columns), rows already there are skipped
    (`ON CONFLICT .. DO NOTHING`) and not answered."""

    def __init__(self, table: sa.Table, columns: Sequence[str], returning: Sequence[str],
                 skip_existing: Sequence[str] = ()) -> None:
        self.columns = tuple(columns)
        if len(self.columns) < 2:
            raise ValueError("a bulk insert names two columns or more")  # see `_pick`
        names = ", ".join(_quote(name) for name in self.columns)
        self._head = f"INSERT INTO {_quote(table.name)} ({names}) "
        self._tail = ""
        if skip_existing:
            self._tail += (f" ON CONFLICT ({', '.join(_quote(name) for name in skip_existing)})"
                           " DO NOTHING")
        self._tail += f" RETURNING {', '.join(_quote(name) for name in returning)}"
        # JSON null becomes SQL NULL in every column, as the ORM stores an attribute never set.
        self._postgresql = sa.text(
            f"{self._head}SELECT {names} FROM json_populate_recordset("
            f"NULL::{_quote(table.name)}, CAST(:rows AS json)){self._tail}"
        ).columns(*(table.c[name] for name in returning))
        dialect = sqlite.dialect()
        # What each column's type binds on SQLite (a time: SQLAlchemy's text for it, which
        # compares in time order), a JSON column's None as SQL NULL.
        binds = [_sqlite_bind(table, name, dialect) for name in self.columns]
        # Only the columns whose values change on the way (times, JSON); the rest go as
        # they are. Picked and converted in as few Python steps as a row allows: a batch
        # binds about a thousand values.
        self._sqlite_binds = [(index, bind) for index, bind in enumerate(binds)
                              if bind is not None]
        self._pick = operator.itemgetter(*self.columns)

    def run(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        if session.get_bind().dialect.name == "postgresql":
            if not rows:
                return []
            document = json.dumps([{name: row[name] for name in self.columns} for row in rows],
                                  default=_json_default)
            return [tuple(row) for row in session.execute(self._postgresql, {"rows": document})]
        answered: list[tuple[Any, ...]] = []
        connection = session.connection()
        for start in range(0, len(rows), _SQLITE_ROWS):
            chunk = rows[start:start + _SQLITE_ROWS]
            values: list[Any] = []
            for row in chunk:
                picked = list(self._pick(row))
                for index, bind in self._sqlite_binds:
                    picked[index] = bind(picked[index])
                values += picked
            answered += [tuple(row) for row in connection.exec_driver_sql(
                self._sqlite_sql(len(chunk)), tuple(values))]
        return answered

    def _sqlite_sql(self, count: int) -> str:
        row = f"({', '.join('?' * len(self.columns))})"
        return f"{self._head}VALUES {', '.join([row] * count)}{self._tail}"


# Rows per SQLite statement: within its limit of 32,766 parameters for any table here.
_SQLITE_ROWS = 500


def bound(table: sa.Table, name: str) -> sa.BindParameter[Any]:
    """A parameter for column `name` that stores a JSON column's None as SQL NULL, as the
    ORM does for an attribute never set (the column's own type would store JSON `null`)."""
    column_type = table.c[name].type
    return sa.bindparam(name, type_=_NULLABLE_JSON if isinstance(column_type, sa.JSON)
                        else column_type)


_NULLABLE_JSON = sa.JSON(none_as_null=True)


def _sqlite_bind(table: sa.Table, name: str, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    column_type = table.c[name].type
    if isinstance(column_type, UTCDateTime):
        return _sqlite_time
    if isinstance(column_type, sa.JSON):
        return _sqlite_json
    return bound(table, name).type.dialect_impl(dialect).bind_processor(dialect)


def _sqlite_json(value: Any) -> str | None:
    # What the JSON type binds with none_as_null (see `bound`), without its layers.
    return None if value is None else json.dumps(value)


def _sqlite_time(value: dt.datetime | None) -> str | None:
    """What UTCDateTime binds on SQLite (naive UTC, SQLAlchemy's text for it), written
    directly: through the type's two layers it was a tenth of a batch's CPU on SQLite."""
    if value is None:
        return None
    if value.tzinfo is not dt.UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC time")
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _quote(name: str) -> str:
    # Our own table and column names (no quote in them): quoted, as `time` and `key` are
    # words of SQL.
    return f'"{name}"'


def _json_default(value: Any) -> str:
    # Times as RFC 3339 with their offset, which timestamptz reads.
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC time")
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a JSON row")
