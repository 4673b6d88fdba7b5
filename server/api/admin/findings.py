"""`/api/v1/findings`: list with filters and cursors, one finding with its timeline, triage,
and export of a whole filter as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from server.api.admin.common import (
    PAGING,
    RowId,
    check_params,
    cursor_of,
    invalid_cursor,
    invalid_query,
    limit_of,
    not_found,
    page,
)
from server.api.deps import AnalystDep, ContextDep, SessionDep, ViewerDep
from server.db import utcnow
from server.store import agents, findings, findings_query
from server.store.findings_query import FindingFilters
from server.store.listing import CursorError, FilterError
from server.untrusted_text import csv_cell

router = APIRouter(prefix="/api/v1", tags=["findings"])

_LIST_PARAMS = (*FindingFilters.names(), *PAGING, "order", "direction")
_EXPORT_PARAMS = (*FindingFilters.names(), "format")
CSV_COLUMNS = ("id", "agent_id", "host", "group", "app", "sensor", "key", "verdict", "action",
               "status", "triage", "triage_comment", "triage_by", "triage_at", "evidence",
               "alternative", "confidence", "message", "matched", "first_seen", "last_seen",
               "resolved_at", "count")
# Evidence comes from machines an attacker may control (process names, command lines):
# CSV cells are made safe by server.untrusted_text.csv_cell. The JSON export is verbatim.
# Rows per chunk written to the socket.
_CHUNK_ROWS = 200

# Documented here for OpenAPI; the values are checked by FindingFilters.from_query.
Text = Annotated[str | None, Query()]


def filters_of(request: Request, allowed: tuple[str, ...]) -> FindingFilters:
    check_params(request, allowed)
    try:
        return FindingFilters.from_query(request.query_params)
    except FilterError as exc:
        raise invalid_query(exc) from exc


@router.get("/findings")
def list_findings(
    principal: ViewerDep, request: Request, session: SessionDep,
    app: Text = None, status: Text = None, triage: Text = None, host: Text = None,
    group: Text = None, sensor: Text = None, verdict: Text = None, agent_id: Text = None,
    since: Text = None, until: Text = None, limit: Text = None, cursor: Text = None,
    order: Annotated[findings_query.Order | None, Query()] = None,
    direction: Annotated[Literal["desc", "asc"] | None, Query()] = None,
) -> dict[str, Any]:
    """Findings matching the filters, newest `last_seen` first unless `order`/`direction` say
    otherwise; follow `next_cursor` for the next page (null on the last)."""
    filters = filters_of(request, _LIST_PARAMS)
    size = limit_of(request)
    try:
        items, next_cursor = findings_query.query_findings(
            session, filters, size, cursor_of(request), order=order or "last_seen",
            descending=direction != "asc")
    except CursorError as exc:
        raise invalid_cursor(exc) from exc
    return page(items, next_cursor)


@router.get("/findings/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/json": {}},
                             "description": "every matching finding, streamed"}})
def export_findings(
    principal: ViewerDep, request: Request, context: ContextDep,
    format: Annotated[Literal["csv", "json"], Query()],
    app: Text = None, status: Text = None, triage: Text = None, host: Text = None,
    group: Text = None, sensor: Text = None, verdict: Text = None, agent_id: Text = None,
    since: Text = None, until: Text = None,
) -> StreamingResponse:
    filters = filters_of(request, _EXPORT_PARAMS)
    # Its own session: the request's closes when the handler returns, before the body streams.
    session = context.read_sessions()
    try:
        rows = findings_query.iter_findings(session, filters)
        # Read the first batch now, so a database error is an error status, not a cut stream.
        first = next(rows, None)
    except BaseException:
        session.close()
        raise
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    body = _csv(first, rows) if format == "csv" else _json(first, rows)
    media_type = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    return StreamingResponse(
        _closing(body, session), media_type=media_type,
        headers={"Content-Disposition":
                 f'attachment; filename="warden-findings-{stamp}.{format}"',
                 "Cache-Control": "no-store"})


def _closing(chunks: Iterator[bytes], session: Session) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        session.close()


def _csv(first: dict[str, Any] | None, rest: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    if first is None:
        yield buffer.getvalue().encode()
        return
    for written, item in enumerate(_chain(first, rest), start=1):
        writer.writerow([csv_cell(name, item.get(name)) for name in CSV_COLUMNS])
        if written % _CHUNK_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _json(first: dict[str, Any] | None, rest: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    if first is None:
        yield b'{"items":[]}'
        return
    parts = ['{"items":[']
    for index, item in enumerate(_chain(first, rest)):
        parts.append(("," if index else "") + json.dumps(item, ensure_ascii=False))
        if len(parts) >= _CHUNK_ROWS:
            yield "".join(parts).encode()
            parts = []
    parts.append("]}")
    yield "".join(parts).encode()


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


@router.get("/findings/{finding_id:int}")
def get_finding(principal: ViewerDep, finding_id: RowId, session: SessionDep) -> dict[str, Any]:
    """The finding and its timeline: every event the agent sent about it, oldest first."""
    row = findings.get(session, finding_id)
    if row is None:
        raise not_found(f"finding {finding_id}")
    view = findings.as_dict(row, agents.get(session, row.agent_id))
    view["events"] = [findings.event_as_dict(event) for event in findings.timeline(session, row)]
    return view


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["new", "acknowledged", "resolved", "false_positive", "excepted"]
    comment: str = Field(default="", max_length=4000)


@router.post("/findings/{finding_id:int}/triage")
def triage_finding(
    principal: AnalystDep, finding_id: RowId, body: TriageRequest, session: SessionDep
) -> dict[str, Any]:
    """Set the reviewers' state of a finding, with a comment; recorded in the audit log."""
    row = findings.set_triage(session, finding_id, body.state, body.comment.strip(),
                              principal.actor)
    if row is None:
        raise not_found(f"finding {finding_id}")
    session.commit()
    return findings.as_dict(row, agents.get(session, row.agent_id))

