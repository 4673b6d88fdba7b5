"""The rows behind the exports: one statement per export, streamed, shaped a chunk at a time.

An export reads every matching row (120,000 findings in a big fleet). Read as
ORM objects in keyset pages and turned into one dict per row, that took 9 s;
so here each export is one plain Core statement whose rows are fetched
`batch_size` at a time (a server-side cursor on PostgreSQL; SQLite steps its
own cursor), in one read transaction: one snapshot, and memory bounded by a
chunk plus the hostname and group of each agent seen. Each chunk
is shaped column by column into the API's values (one call mapped over a
column instead of a dict per row), for server.export_format to write. Every
column is read as text or a number, so no per-value result processing runs:
times come as their stored UTC text and are rewritten into isoformat() by a
few string replaces over the whole column, JSON as its text decoded once per
chunk.

The columns are the API's, in its order, with the same values
`findings.as_dict` / `violations.as_dict` give (tests/server/test_export_bytes.py
holds them to it): a `Chunk` maps each field name to that field's values.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.actors import actor_name
from server.models import Agent, Finding, Violation
from server.store import outcomes

Chunk = dict[str, list[Any]]
# Rows per fetch and per chunk written: big enough to amortise a round trip and the
# per-column calls, small enough to stream steadily.
EXPORT_BATCH = 1000


def _json_text(dialect: str) -> Callable[[Any], Any]:
    """How a JSON column is read: as its text, decoded a chunk at a time (`_json_values`).
    SQLite gives a column declared JSON numeric affinity, so a bare number is stored as a
    number: it is read as stored (CAST would print a REAL with 15 digits and lose the rest)."""
    if dialect == "postgresql":
        return lambda column: sa.cast(column, sa.Text)
    return lambda column: sa.type_coerce(column, sa.Text)


def _time_text(dialect: str) -> Callable[[Any], Any]:
    """How a time column is read: as text in SQLite's storage form, `2026-12-03 20:06:19.123456`
    (UTC), rewritten by `_times`. Parsing 320,000 datetimes to write them out again was a
    third of the export's reading; SQLite stores that text, PostgreSQL writes it in C."""
    if dialect == "postgresql":
        return lambda column: sa.func.to_char(sa.func.timezone("UTC", column),
                                              "YYYY-MM-DD HH24:MI:SS.US", type_=sa.Text)
    return lambda column: sa.type_coerce(column, sa.Text)


# The filters come in as their SQL conditions (`findings_query.conditions(filters)`, ...): the query
# modules hand their iterators over to this one, so it cannot import them.
Where = Sequence[sa.ColumnElement[bool]]


def finding_chunks(session: Session, where: Where,
                   batch_size: int = EXPORT_BATCH) -> Iterator[Chunk]:
    """Every finding matching `where`, newest id first, a chunk of columns at a time."""
    dialect = session.connection().dialect.name
    time, as_text = _time_text(dialect), _json_text(dialect)
    query = sa.select(
        Finding.id, Finding.agent_id, Finding.app, Finding.sensor, Finding.key,
        Finding.verdict, Finding.action, Finding.status, Finding.triage, Finding.triage_comment,
        Finding.triage_by, time(Finding.triage_at), as_text(Finding.evidence),
        Finding.alternative, Finding.confidence, Finding.message, Finding.matched,
        time(Finding.first_seen), time(Finding.last_seen), time(Finding.resolved_at),
        Finding.count, as_text(Finding.outcomes))
    return _chunks(session, query.where(*where).order_by(Finding.id.desc()),
                   _finding_columns, batch_size)


def violation_chunks(session: Session, where: Where,
                     batch_size: int = EXPORT_BATCH) -> Iterator[Chunk]:
    """Every violation matching `where`, newest id first, a chunk of columns at a time."""
    dialect = session.connection().dialect.name
    time, as_text = _time_text(dialect), _json_text(dialect)
    query = sa.select(
        Violation.id, Violation.agent_id, Violation.app, Violation.status,
        time(Violation.first_seen), time(Violation.last_seen), time(Violation.opened_at),
        time(Violation.resolved_at), Violation.findings, Violation.open_findings,
        as_text(Violation.sensor_counts), Violation.triage, Violation.triage_comment,
        Violation.triage_by, time(Violation.triage_at))
    return _chunks(session, query.where(*where).order_by(Violation.id.desc()),
                   _violation_columns, batch_size)


Shape = Callable[[list[list[Any]], "_Owners"], Chunk]


def _chunks(session: Session, query: sa.Executable, shape: Shape,
            batch_size: int) -> Iterator[Chunk]:
    # On the session's connection (its transaction and snapshot), but not through the ORM:
    # plain rows, no per-row ORM loading. Every column is read as text or a number, so no
    # result processor runs per value.
    owners = _Owners(session)
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        # A server-side cursor on PostgreSQL, read through the result (which buffers ahead).
        streamed = connection.execute(query, execution_options={"yield_per": batch_size})
        for rows in streamed.partitions():
            yield shape(list(map(list, zip(*rows, strict=True))), owners)
        return
    # SQLite steps its cursor as rows are fetched and the result reads nothing ahead, so
    # its DB-API cursor is read directly: plain tuples, without a Row made for each (a
    # tenth of the export's time).
    with connection.execute(query) as result:
        cursor = result.cursor
        while rows := cursor.fetchmany(batch_size):
            yield shape(list(map(list, zip(*rows, strict=True))), owners)


def as_dicts(chunks: Iterator[Chunk]) -> Iterator[dict[str, Any]]:
    """The rows again, one API-shaped dict each (for callers that want items, not columns)."""
    for chunk in chunks:
        for values in zip(*chunk.values(), strict=True):
            yield dict(zip(chunk, values, strict=True))


class _Owners:
    """Each agent's hostname and group, read once per export: joined in the export's
    statement, SQLite looked the agent up again for each of 120,000 findings (half the
    statement's time) though a fleet has a sixth as many.

    The agents of each chunk not seen before are looked up by id; once an export has looked
    up an eighth of the fleet that way it reads the rest of the fleet in one pass, which
    costs about what those lookups did (an index probe per agent against a sequential read).
    A small export never reads more than its own agents; a big one at most about twice what
    reading the fleet at the start would have."""

    def __init__(self, session: Session) -> None:
        self._session = session
        # Two maps, so a chunk's column is one C-level map over its agent ids.
        self._hosts: dict[str, str] = {}
        self._groups: dict[str, str | None] = {}
        self._fleet: int | None = None
        self._whole = False

    def of(self, agent_ids: list[str]) -> tuple[list[str | None], list[str | None]]:
        """(hostnames, groups) of these agents, in their order; None for no such agent."""
        missing = set(agent_ids).difference(self._hosts) if not self._whole else ()
        if missing:
            query = sa.select(Agent.id, Agent.hostname, Agent.group)
            if self._fleet is None:
                self._fleet = self._session.connection().scalar(
                    sa.select(sa.func.count()).select_from(Agent)) or 0
            if 8 * (len(self._hosts) + len(missing)) > self._fleet:
                self._whole = True
            else:
                query = query.where(Agent.id.in_(missing))
            for agent_id, hostname, group in self._session.connection().execute(query):
                self._hosts[agent_id] = hostname
                self._groups[agent_id] = group
        return list(map(self._hosts.get, agent_ids)), list(map(self._groups.get, agent_ids))


def _finding_columns(columns: list[list[Any]], owners: _Owners) -> Chunk:
    (ids, agent_ids, apps, sensors, keys, verdicts, actions, statuses, triages, comments,
     triaged_by, triaged_at, evidence, alternatives, confidences, messages, matched,
     first_seen, last_seen, resolved_at, counts, results) = columns
    hosts, groups = owners.of(agent_ids)
    evidence, results = _json_values(evidence), _json_values(results)
    return {
        "id": ids, "agent_id": agent_ids, "host": hosts, "group": groups, "app": apps,
        "sensor": sensors, "key": keys, "verdict": verdicts, "action": actions,
        "status": statuses, "triage": triages, "triage_comment": comments,
        "triage_by": triaged_by, "triage_by_name": list(map(_actor_name, triaged_by)),
        "triage_at": _times(triaged_at), "evidence": evidence, "alternative": alternatives,
        "confidence": confidences, "message": messages, "matched": matched,
        "first_seen": _times(first_seen), "last_seen": _times(last_seen),
        "resolved_at": _times(resolved_at), "count": counts,
        # Most findings have no outcome yet: those skip the call.
        "outcomes": [[] if result is None else outcomes.outcome_list(result)
                     for result in results],
        "outcome": [_no_outcome(action) if result is None
                    else outcomes.outcome_text(action, result)
                    for action, result in zip(actions, results, strict=True)],
    }


def _violation_columns(columns: list[list[Any]], owners: _Owners) -> Chunk:
    (ids, agent_ids, apps, statuses, first_seen, last_seen, opened_at, resolved_at, counts,
     open_counts, sensor_counts, triages, comments, triaged_by, triaged_at) = columns
    hosts, groups = owners.of(agent_ids)
    per_sensor = [dict(sorted((counted or {}).items()))
                  for counted in _json_values(sensor_counts)]
    return {
        "id": ids, "agent_id": agent_ids, "host": hosts, "group": groups, "app": apps,
        "status": statuses, "first_seen": _times(first_seen), "last_seen": _times(last_seen),
        "opened_at": _times(opened_at), "resolved_at": _times(resolved_at),
        "finding_count": counts, "open_finding_count": open_counts,
        # Sorted, as violations.as_dict does (JSONB hands keys back in its own order).
        "sensor_counts": per_sensor,
        "sightings": [sum(int(count) for count in counted.values()) for counted in per_sensor],
        "triage": triages, "triage_comment": comments, "triage_by": triaged_by,
        "triage_at": _times(triaged_at),
    }


def _json_values(texts: list[Any]) -> list[Any]:
    """Each JSON text decoded (None for SQL NULL), as the column type would, but in one
    json.loads for the chunk: decoding value by value was a fifth of the export's time.
    The values are as the database hands them: text, None, or on SQLite a number."""
    try:
        joined = ",".join("null" if text is None else text for text in texts)
    except TypeError:  # a number as SQLite stored it (see `_json_text`): already decoded
        return [text if text is None or isinstance(text, int | float) else json.loads(text)
                for text in texts]
    values = json.loads("[" + joined + "]")
    if not isinstance(values, list) or len(values) != len(texts):
        # A text that is not one JSON value alone (written by hand): decoded one by one, so
        # it fails as it would have, on its own.
        return [None if text is None else json.loads(text) for text in texts]
    return values


def _times(texts: list[str | None]) -> list[str] | list[str | None]:
    """Each stored time (see `_time_text`) as server.db.UTCDateTime reads it, then
    isoformat(): `2026-12-03T20:06:19.123456+00:00`, no fraction when it is zero. The
    column is checked at once and rewritten by a few replaces over it; a text of any
    other form (written by hand) is parsed as the column type would."""
    present = [text for text in texts if text is not None]
    if not present:
        return texts
    joined = "\n".join(present) + "\n"
    if not _STORED_TIMES.fullmatch(joined):
        return [None if text is None else _parsed_time(text) for text in texts]
    iso = (joined.replace(".000000\n", "\n").replace(" ", "T")
           .replace("\n", "+00:00\n").split("\n"))
    iso.pop()  # after the last newline
    if len(iso) != len(present):  # a newline inside a text: not one of ours
        return [None if text is None else _parsed_time(text) for text in texts]
    if len(present) == len(texts):
        return iso
    written = iter(iso)
    return [None if text is None else next(written) for text in texts]


_STORED_TIMES = re.compile(r"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{6})?\n)+")


def _parsed_time(text: str) -> str:
    # As the column type reads it (SQLAlchemy's SQLite DATETIME: fromisoformat), then as
    # UTCDateTime: naive is UTC.
    value = dt.datetime.fromisoformat(text)
    return value.isoformat() + "+00:00" if value.tzinfo is None \
        else value.astimezone(dt.UTC).isoformat()


# A fleet has a few reviewers and a few actions: cached, each is worked out once per export
# rather than once per row.
_actor_name = functools.lru_cache(maxsize=1024)(actor_name)


@functools.lru_cache(maxsize=64)
def _no_outcome(action: str) -> str:
    return outcomes.outcome_text(action, None)
