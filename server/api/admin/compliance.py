"""`/api/v1/compliance/history` (daily snapshots per group, time to remediate) and
`/api/v1/reports/compliance` (the report as PDF, HTML, CSV or JSON)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from server.api.admin.common import ROUTER_ERRORS, silent_after
from server.api.deps import ContextDep, SessionDep, ViewerDep
from server.db import utcnow
from server.reports import render
from server.reports.service import report_for
from server.schemas.compliance import (
    ComplianceHistory,
    ComplianceHistoryQuery,
    ComplianceReport,
    ComplianceReportQuery,
)
from server.store import compliance

router = APIRouter(prefix="/api/v1", tags=["compliance"], responses=ROUTER_ERRORS)


@router.get("/compliance/history")
def compliance_history(
    principal: ViewerDep, query: Annotated[ComplianceHistoryQuery, Query()], session: SessionDep
) -> ComplianceHistory:
    """One point per UTC day that has a snapshot (taken daily by the server), oldest first,
    for one group or the whole fleet; and the median days to remediate per group."""
    today = utcnow().date()
    return ComplianceHistory.model_validate({
        "days": query.days, "group": query.group,
        "points": compliance.history(session, today, query.days, query.group),
        "time_to_remediate": compliance.time_to_remediate(session, today, query.days,
                                                          query.group)})


_DOCUMENTS = {"application/pdf": {"schema": {"type": "string", "format": "binary"}},
              "text/html": {"schema": {"type": "string"}},
              "text/csv": {"schema": {"type": "string"}}}


@router.get("/reports/compliance", response_class=Response, responses={
    200: {"model": ComplianceReport, "content": _DOCUMENTS,
          "description": "the report, as an attachment in the format asked for"}})
def compliance_report(
    principal: ViewerDep, query: Annotated[ComplianceReportQuery, Query()], session: SessionDep,
    context: ContextDep,
) -> Response:
    """Summary, trend, worst groups, time to remediate, open violations and active exceptions
    for the last `days` days of the fleet or of one group."""
    report = report_for(session, utcnow(), silent_after(context), query.days, query.group)
    return Response(render.render(report, query.format),
                    media_type=render.MEDIA_TYPES[query.format],
                    headers={"Content-Disposition": "attachment; filename="
                             f'"{render.file_name(report, query.format)}"',
                             "Cache-Control": "no-store"})
