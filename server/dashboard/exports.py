"""Export the findings table's current filter as CSV or JSON, streamed.

The browser cannot send the API's bearer token with a plain link, so the
dashboard streams the export itself, from the same query as the table
(`iter_findings`), in one read transaction: one consistent snapshot however
long the download takes, and memory that stays flat for any size. The bytes
are the API export's (`GET /api/v1/findings/export`): its columns, the same
cell rules; a test compares the two.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from server.api.admin.findings import CSV_COLUMNS
from server.api.deps import ServerContext
from server.dashboard.auth import Viewer
from server.dashboard.findings import filters_from
from server.dashboard.web import DashboardRoute, PageError, problem_text
from server.db import utcnow
from server.store.findings_query import FilterError, FindingFilters, iter_findings
from server.untrusted_text import csv_cell

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

_FLUSH_BYTES = 64 * 1024


@router.get("/findings/export.csv")
def export_csv(request: Request, person: Viewer) -> Response:
    filters = _filters(request)
    return _download(request.app.state.context, filters, "csv", "text/csv; charset=utf-8",
                     _csv_chunks)


@router.get("/findings/export.json")
def export_json(request: Request, person: Viewer) -> Response:
    filters = _filters(request)
    return _download(request.app.state.context, filters, "json", "application/json",
                     _json_chunks)


def _filters(request: Request) -> FindingFilters:
    try:
        return filters_from(request.query_params)
    except FilterError as exc:
        raise PageError(400, problem_text(exc)) from exc


def _download(context: ServerContext, filters: FindingFilters, suffix: str, media_type: str,
              chunks: Any) -> Response:
    def body() -> Iterator[bytes]:
        # Opened here, not in the handler: the session lives exactly as long as the stream.
        with context.read_sessions() as session:
            yield from chunks(iter_findings(session, filters))

    name = f"warden-findings-{utcnow():%Y%m%d-%H%M%S}.{suffix}"
    return StreamingResponse(body(), media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _csv_chunks(items: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([csv_cell(column, item.get(column)) for column in CSV_COLUMNS])
        if buffer.tell() >= _FLUSH_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _json_chunks(items: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    yield b'{"items":['
    pending: list[str] = []
    size = 0
    for index, item in enumerate(items):
        text = ("," if index else "") + json.dumps(item, ensure_ascii=False)
        pending.append(text)
        size += len(text)
        if size >= _FLUSH_BYTES:
            yield "".join(pending).encode()
            pending, size = [], 0
    yield ("".join(pending) + "]}").encode()
