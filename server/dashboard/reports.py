"""The compliance report as a download from the dashboard (the overview's form).

A plain link cannot carry the API's bearer token, so the dashboard serves the
report itself, from the same builder and renderers as
`GET /api/v1/reports/compliance`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.dashboard.auth import Viewer
from server.dashboard.web import DashboardRoute, PageError, problem_text, secure
from server.db import utcnow
from server.reports import render
from server.reports.service import report_for
from server.schemas.compliance import ComplianceReportQuery
from server.store.listing import FilterError, filters_from_form

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@router.get("/reports/compliance")
def compliance_report(request: Request, person: Viewer) -> Response:
    try:
        query = filters_from_form(ComplianceReportQuery, request.query_params)
    except FilterError as exc:
        raise PageError(400, problem_text(exc)) from exc
    context = request.app.state.context
    with context.read_sessions() as session:
        report = report_for(session, utcnow(), context.settings.silent_after, query.days,
                            query.group)
    return secure(Response(
        render.render(report, query.format), media_type=render.MEDIA_TYPES[query.format],
        headers={"Content-Disposition":
                 f'attachment; filename="{render.file_name(report, query.format)}"'}))
