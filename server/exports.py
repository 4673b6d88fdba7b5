"""Export of the findings that match a filter, as CSV or JSON, streamed: one module for the
API (`GET /api/v1/findings/export`) and the dashboard's download links.

Rows come from `iter_findings`, the same query as the lists, in one read
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
from server.store.findings_query import FindingFilters, iter_findings
from server.untrusted_text import csv_cell

ExportFormat = Literal["csv", "json"]
# The finding's fields, in the order the API answers them.
CSV_COLUMNS = tuple(Finding.model_fields)
# Evidence comes from machines an attacker may control (process names, command lines):
# CSV cells are made safe by server.untrusted_text.csv_cell. The JSON export is verbatim.
# Rows per chunk written to the socket.
_CHUNK_ROWS = 200
_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def findings_download(
    context: ServerContext, filters: FindingFilters, format: ExportFormat
) -> StreamingResponse:
    """Every finding matching `filters`, newest id first, as an attachment."""
    # Its own session: a request's closes when the handler returns, before the body streams.
    session = context.read_sessions()
    try:
        rows = iter_findings(session, filters)
        first = next(rows, None)
    except BaseException:
        session.close()
        raise
    chunks: Callable[[dict[str, Any] | None, Iterator[dict[str, Any]]], Iterator[bytes]] = \
        csv_chunks if format == "csv" else json_chunks
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _closing(chunks(first, rows), session), media_type=_MEDIA_TYPES[format],
        headers={"Content-Disposition":
                 f'attachment; filename="warden-findings-{stamp}.{format}"',
                 "Cache-Control": "no-store"})


def _closing(chunks: Iterator[bytes], session: Session) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        session.close()


def csv_chunks(first: dict[str, Any] | None, rest: Iterator[dict[str, Any]]) -> Iterator[bytes]:
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
