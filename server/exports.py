"""Export of the findings or violations that match a filter, as CSV or JSON, streamed: one
module for the API (`GET /api/v1/findings/export`, `/violations/export`) and the dashboard's
download links.

Rows come from `iter_findings` / `iter_violations`, the same query as the lists, in one read
transaction: one consistent snapshot however long the download takes, and
memory that stays flat for any size. The first batch is read before the
answer starts, so a database error is an error status, not a cut stream.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from server.api.deps import ServerContext
from server.db import utcnow
from server.schemas.findings import Finding
from server.schemas.violations import Violation
from server.store.findings_query import FindingFilters, iter_findings
from server.store.violations_query import ViolationFilters, iter_violations
from server.untrusted_text import csv_cell

ExportFormat = Literal["csv", "json"]
# The fields, in the order the API answers them.
CSV_COLUMNS = tuple(Finding.model_fields)
VIOLATION_COLUMNS = tuple(Violation.model_fields)
# Evidence comes from machines an attacker may control (process names, command lines):
# CSV cells are made safe by server.untrusted_text.csv_cell. The JSON export is verbatim.
# Rows per chunk written to the socket.
_CHUNK_ROWS = 200
_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def findings_download(
    context: ServerContext, filters: FindingFilters, format: ExportFormat
) -> StreamingResponse:
    """Every finding matching `filters`, newest id first, as an attachment."""
    return _download(context, lambda session: iter_findings(session, filters), CSV_COLUMNS,
                     "findings", format)


def violations_download(
    context: ServerContext, filters: ViolationFilters, format: ExportFormat
) -> StreamingResponse:
    """Every violation matching `filters`, newest id first, as an attachment."""
    return _download(context, lambda session: iter_violations(session, filters),
                     VIOLATION_COLUMNS, "violations", format)


def _download(context: ServerContext, read: Callable[[Session], Iterator[dict[str, Any]]],
              columns: tuple[str, ...], what: str, format: ExportFormat) -> StreamingResponse:
    # Its own session: a request's closes when the handler returns, before the body streams.
    session = context.read_sessions()
    try:
        rows = read(session)
        first = next(rows, None)
    except BaseException:
        session.close()
        raise
    chunks = csv_chunks(first, rows, columns) if format == "csv" else json_chunks(first, rows)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _closing(chunks, session), media_type=_MEDIA_TYPES[format],
        headers={"Content-Disposition":
                 f'attachment; filename="warden-{what}-{stamp}.{format}"',
                 "Cache-Control": "no-store"})


def _closing(chunks: Iterator[bytes], session: Session) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        session.close()


def csv_chunks(first: dict[str, Any] | None, rest: Iterator[dict[str, Any]],
               columns: tuple[str, ...] = CSV_COLUMNS) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    if first is None:
        yield buffer.getvalue().encode()
        return
    for written, item in enumerate(_chain(first, rest), start=1):
        writer.writerow([csv_cell(name, item.get(name)) for name in columns])
        if written % _CHUNK_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def json_chunks(first: dict[str, Any] | None, rest: Iterator[dict[str, Any]]) -> Iterator[bytes]:
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
