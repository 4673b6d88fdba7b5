"""The audit log (administrators): who changed what, when, with the before and after."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from server.dashboard.auth import Admin
from server.dashboard.web import DashboardDep, DashboardRoute
from server.store import audit

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

PAGE_SIZE = 50


@router.get("/audit")
def audit_log(request: Request, dashboard: DashboardDep, person: Admin,
              before: int | None = Query(None, ge=1)) -> Response:
    with request.app.state.context.read_sessions() as session:
        # One more than shown tells whether an older page exists, without a count.
        entries = audit.list_entries(session, limit=PAGE_SIZE + 1, before_id=before)
    older = entries[PAGE_SIZE - 1].id if len(entries) > PAGE_SIZE else None
    return dashboard.page(request, "audit.html", entries=entries[:PAGE_SIZE], older=older,
                          first_page=before is None)
