"""One batch's rows into one table with one statement, on SQLite and on PostgreSQL.

SQLAlchemy sends many rows as one `INSERT .. VALUES (..), (..)` with a parameter per
value. psycopg parses every statement longer than 4 KiB or with more than 50 parameters
in Python, on every run (shorter ones it caches): about 9 ms for 40 findings, far more
than PostgreSQL spends storing them; arrays of JSON text (`unnest`) cost as much again in
psycopg's escaping. So on PostgreSQL the rows go as one JSON document, one parameter
that PostgreSQL turns into rows of the table's own type (`json_populate_recordset`).
SQLite's driver has no such cost, and keeps SQLAlchemy's many-rows INSERT.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session


class BulkInsert:
    """`INSERT` of many rows into `table`'s `columns`, answering each new row's `returning`
    columns; with `skip_existing` (a unique key's columns), rows already there are skipped
    (`ON CONFLICT .. DO NOTHING`) and not answered."""

    def __init__(self, table: sa.Table, columns: Sequence[str], returning: Sequence[str],
                 skip_existing: Sequence[str] = ()) -> None:
        self.columns = tuple(columns)
        self._sqlite = _values_statement(table, self.columns, returning, skip_existing)
        self._postgresql = _recordset_statement(table, self.columns, returning, skip_existing)

    def run(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        if not rows:
            return []
        if session.get_bind().dialect.name != "postgresql":
            answered = session.execute(self._sqlite, [dict(row) for row in rows])
        else:
            document = json.dumps([{name: row[name] for name in self.columns} for row in rows],
                                  default=_json_default)
            answered = session.execute(self._postgresql, {"rows": document})
        return [tuple(row) for row in answered]


def bound(table: sa.Table, name: str) -> sa.BindParameter[Any]:
    """A parameter for column `name` that stores a JSON column's None as SQL NULL, as the
    ORM does for an attribute never set (the column's own type would store JSON `null`)."""
    column_type = table.c[name].type
    return sa.bindparam(name, type_=_NULLABLE_JSON if isinstance(column_type, sa.JSON)
                        else column_type)


_NULLABLE_JSON = sa.JSON(none_as_null=True)


def _values_statement(table: sa.Table, columns: tuple[str, ...], returning: Sequence[str],
                      skip_existing: Sequence[str]) -> sa.Insert:
    statement = sqlite.insert(table).values({name: bound(table, name) for name in columns})
    if skip_existing:
        statement = statement.on_conflict_do_nothing(index_elements=list(skip_existing))
    return statement.returning(*(table.c[name] for name in returning))


def _recordset_statement(table: sa.Table, columns: tuple[str, ...], returning: Sequence[str],
                         skip_existing: Sequence[str]) -> sa.TextualSelect:
    names = ", ".join(_quote(name) for name in columns)
    # JSON null becomes SQL NULL in every column, as the ORM stores an attribute never set.
    sql = (f"INSERT INTO {_quote(table.name)} ({names}) SELECT {names} "
           f"FROM json_populate_recordset(NULL::{_quote(table.name)}, CAST(:rows AS json))")
    if skip_existing:
        sql += f" ON CONFLICT ({', '.join(_quote(name) for name in skip_existing)}) DO NOTHING"
    sql += f" RETURNING {', '.join(_quote(name) for name in returning)}"
    return sa.text(sql).columns(*(table.c[name] for name in returning))


def _quote(name: str) -> str:
    # Our own table and column names (no quote in them): quoted, as `time` and `key` are
    # words of SQL.
    return f'"{name}"'


def _json_default(value: Any) -> str:
    # Times as RFC 3339 with their offset (every time here is aware), which timestamptz reads.
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC time")
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a JSON row")
