"""The rows behind the exports: one statement per export, streamed, shaped a chunk at a time.

An export reads every matching row (120,000 findings in a big fleet). Read as
ORM objects in keyset pages and turned into one dict per row, that took 9 s;
so here each export is one plain Core statement whose rows are fetched
`batch_size` at a time (a server-side cursor on PostgreSQL; SQLite steps its
own cursor), in one read transaction: one snapshot, and memory bounded by a
chunk plus the hostname and group of each agent seen. Each chunk
is shaped column by column into the API's values (one call mapped over a
column instead of a dict per row), for server.export_format to write.

The columns are the API's, in its order, with the same values
`findings.as_dict` / `violations.as_dict` give (tests/server/test_export_bytes.py
holds them to it): a `Chunk` maps each field name to that field's values.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator, Sequence
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


def _as_text(column: Any) -> Any:
    # JSON columns read as their text, decoded a chunk at a time (see `_json_values`).
    return sa.cast(column, sa.Text)


def _raw_time(column: Any) -> Any:
    # Times read without the UTCDateTime decorator (a Python call per value, a fifth of the
    # export's time) and written as it would have them (see `_times`).
    return sa.type_coerce(column, sa.DateTime(timezone=True))


_FINDING_SELECT = (
    Finding.id, Finding.agent_id, Finding.app, Finding.sensor, Finding.key, Finding.verdict,
    Finding.action, Finding.status, Finding.triage, Finding.triage_comment, Finding.triage_by,
    _raw_time(Finding.triage_at), _as_text(Finding.evidence), Finding.alternative,
    Finding.confidence, Finding.message, Finding.matched, _raw_time(Finding.first_seen),
    _raw_time(Finding.last_seen), _raw_time(Finding.resolved_at), Finding.count,
    _as_text(Finding.outcomes))
_VIOLATION_SELECT = (
    Violation.id, Violation.agent_id, Violation.app, Violation.status,
    _raw_time(Violation.first_seen), _raw_time(Violation.last_seen),
    _raw_time(Violation.opened_at), _raw_time(Violation.resolved_at), Violation.findings,
    Violation.open_findings, _as_text(Violation.sensor_counts), Violation.triage,
    Violation.triage_comment, Violation.triage_by, _raw_time(Violation.triage_at))


# The filters come in as their SQL conditions (`FindingFilters.conditions()`, ...): the query
# modules hand their iterators over to this one, so it cannot import them.
Where = Sequence[sa.ColumnElement[bool]]


def finding_chunks(session: Session, where: Where,
                   batch_size: int = EXPORT_BATCH) -> Iterator[Chunk]:
    """Every finding matching `where`, newest id first, a chunk of columns at a time."""
    query = (sa.select(*_FINDING_SELECT).where(*where)
             .order_by(Finding.id.desc()))
    owners = _Owners(session)
    for rows in _stream(session, query, batch_size):
        yield _finding_columns(rows, owners)


def violation_chunks(session: Session, where: Where,
                     batch_size: int = EXPORT_BATCH) -> Iterator[Chunk]:
    """Every violation matching `where`, newest id first, a chunk of columns at a time."""
    query = (sa.select(*_VIOLATION_SELECT).where(*where)
             .order_by(Violation.id.desc()))
    owners = _Owners(session)
    for rows in _stream(session, query, batch_size):
        yield _violation_columns(rows, owners)


def as_dicts(chunks: Iterator[Chunk]) -> Iterator[dict[str, Any]]:
    """The rows again, one API-shaped dict each (for callers that want items, not columns)."""
    for chunk in chunks:
        for values in zip(*chunk.values(), strict=True):
            yield dict(zip(chunk, values, strict=True))


def _stream(session: Session, query: sa.Select[Any],
            batch_size: int) -> Iterator[Sequence[sa.Row[Any]]]:
    # On the session's connection (its transaction and snapshot), but not through the ORM:
    # plain rows, no per-row ORM loading.
    result = session.connection().execute(query, execution_options={"yield_per": batch_size})
    yield from result.partitions()


class _Owners:
    """Each agent's hostname and group, read once per export for the agents of each chunk not
    seen before: joined in the export's statement, SQLite looked the agent up again for each
    of 120,000 findings (half the statement's time) though a fleet has a sixth as many."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._known: dict[str, tuple[str, str | None]] = {}

    def of(self, agent_ids: list[str]) -> tuple[list[str | None], list[str | None]]:
        """(hostnames, groups) of these agents, in their order; None for no such agent."""
        missing = set(agent_ids).difference(self._known)
        if missing:
            self._known.update((agent_id, (hostname, group)) for agent_id, hostname, group in
                               self._session.connection().execute(
                                   sa.select(Agent.id, Agent.hostname, Agent.group)
                                   .where(Agent.id.in_(missing))).all())
        owners = [self._known.get(agent_id, _NO_OWNER) for agent_id in agent_ids]
        return [owner[0] for owner in owners], [owner[1] for owner in owners]


_NO_OWNER: tuple[str | None, str | None] = (None, None)


def _finding_columns(rows: Sequence[sa.Row[Any]], owners: _Owners) -> Chunk:
    (ids, agent_ids, apps, sensors, keys, verdicts, actions, statuses, triages, comments,
     triaged_by, triaged_at, evidence, alternatives, confidences, messages, matched,
     first_seen, last_seen, resolved_at, counts, results) = map(list, zip(*rows, strict=True))
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
        "outcomes": list(map(outcomes.outcome_list, results)),
        "outcome": list(map(_outcome_text, actions, results)),
    }


def _violation_columns(rows: Sequence[sa.Row[Any]], owners: _Owners) -> Chunk:
    (ids, agent_ids, apps, statuses, first_seen, last_seen, opened_at, resolved_at, counts,
     open_counts, sensor_counts, triages, comments, triaged_by,
     triaged_at) = map(list, zip(*rows, strict=True))
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


def _json_values(texts: list[str | None]) -> list[Any]:
    """Each JSON text decoded (None for SQL NULL), as the column type would, but in one
    json.loads for the chunk: decoding value by value was a fifth of the export's time."""
    values = json.loads("[" + ",".join("null" if text is None else text
                                       for text in texts) + "]")
    if not isinstance(values, list) or len(values) != len(texts):
        # A text that is not one JSON value alone (written by hand): decoded one by one, so
        # it fails as it would have, on its own.
        return [None if text is None else json.loads(text) for text in texts]
    return values


def _times(values: list[dt.datetime | None]) -> list[str | None]:
    # As server.db.UTCDateTime reads them, then isoformat(): SQLite hands back naive UTC,
    # PostgreSQL aware times in the session's zone.
    return [None if value is None else value.isoformat() + "+00:00" if value.tzinfo is None
            else value.astimezone(dt.UTC).isoformat() for value in values]


# A fleet has a few reviewers and a few actions: cached, each is worked out once per export
# rather than once per row.
_actor_name = functools.lru_cache(maxsize=1024)(actor_name)


def _outcome_text(action: str, results: Any) -> str:
    if results is None:
        return _no_outcome(action)
    return outcomes.outcome_text(action, results)


@functools.lru_cache(maxsize=64)
def _no_outcome(action: str) -> str:
    return outcomes.outcome_text(action, None)
