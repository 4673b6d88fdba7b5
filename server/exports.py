"""Export of the findings or violations that match a filter, as CSV or JSON, streamed: one
module for the API (`GET /api/v1/findings/export`, `/violations/export`) and the dashboard's
download links.

Rows come from server.store.export_rows: one statement per export, fetched a
chunk at a time in one read transaction, so one consistent snapshot however
long the download takes, and memory that stays flat for any size; each chunk
is written by server.export_format. The first chunk is read before the answer
starts, so a database error is an error status, not a cut stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from server import export_format
from server.api.deps import ServerContext
from server.db import utcnow
from server.schemas.findings import Finding
from server.schemas.violations import Violation
from server.store import export_rows, findings_query, violations_query
from server.store.export_rows import Chunk
from server.store.findings_query import FindingFilters
from server.store.violations_query import ViolationFilters

ExportFormat = Literal["csv", "json"]
# The fields, in the order the API answers them.
CSV_COLUMNS = tuple(Finding.model_fields)
VIOLATION_COLUMNS = tuple(Violation.model_fields)
# Evidence comes from machines an attacker may control (process names, command lines):
# CSV cells are made safe as server.untrusted_text.csv_cell does. The JSON export is verbatim.
_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def findings_download(
    context: ServerContext, filters: FindingFilters, format: ExportFormat
) -> StreamingResponse:
    """Every finding matching `filters`, newest id first, as an attachment."""
    where = findings_query.conditions(filters)
    return _download(context, lambda session: export_rows.finding_chunks(session, where),
                     CSV_COLUMNS, "findings", format)


def violations_download(
    context: ServerContext, filters: ViolationFilters, format: ExportFormat
) -> StreamingResponse:
    """Every violation matching `filters`, newest id first, as an attachment."""
    where = violations_query.conditions(filters, paging=False)
    return _download(context, lambda session: export_rows.violation_chunks(session, where),
                     VIOLATION_COLUMNS, "violations", format)


def _download(context: ServerContext, read: Callable[[Session], Iterator[Chunk]],
              columns: tuple[str, ...], what: str, format: ExportFormat) -> StreamingResponse:
    # Its own session: a request's closes when the handler returns, before the body streams.
    session = context.read_sessions()
    try:
        chunks = read(session)
        first = next(chunks, None)
    except BaseException:
        session.close()
        raise
    body = _csv_body(first, chunks, columns) if format == "csv" else _json_body(first, chunks)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _closing(body, session), media_type=_MEDIA_TYPES[format],
        headers={"Content-Disposition":
                 f'attachment; filename="warden-{what}-{stamp}.{format}"',
                 "Cache-Control": "no-store"})


def _closing(body: Iterator[bytes], session: Session) -> Iterator[bytes]:
    try:
        yield from body
    finally:
        session.close()


def _csv_body(first: Chunk | None, rest: Iterator[Chunk],
               columns: tuple[str, ...] = CSV_COLUMNS) -> Iterator[bytes]:
    header = export_format.csv_header(columns)
    if first is None:
        yield header.encode()
        return
    yield (header + export_format.csv_rows(first, columns)).encode()
    for chunk in rest:
        yield export_format.csv_rows(chunk, columns).encode()


def _json_body(first: Chunk | None, rest: Iterator[Chunk]) -> Iterator[bytes]:
    if first is None:
        yield b'{"items":[]}'
        return
    yield ('{"items":[' + export_format.json_rows(first)).encode()
    for chunk in rest:
        yield ("," + export_format.json_rows(chunk)).encode()
    yield b"]}"
