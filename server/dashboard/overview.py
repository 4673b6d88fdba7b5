"""The overview: is the fleet compliant, what is open, what is new, what to use instead."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server import charts
from server.dashboard import apps
from server.dashboard.auth import Viewer
from server.dashboard.hosts import silent_after
from server.dashboard.web import DashboardDep, DashboardRoute
from server.db import utcnow
from server.store import compliance as history_store
from server.store import findings, stats
from server.store.findings_query import FindingFilters, query_findings
from server.store.known_apps import bounded_by_app

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

CHART_DAYS = 30
LATEST = 10


@router.get("/")
def overview(request: Request, dashboard: DashboardDep, person: Viewer) -> Response:
    context = request.app.state.context
    now = utcnow()
    quiet = silent_after(context.settings)
    with context.read_sessions() as session:
        by_state, compliance = stats.fleet(session, now, quiet)
        counts = bounded_by_app(findings.open_counts_by_app(session),
                                context.known_apps.ids(session))
        by_app = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        per_day = [(dt.date.fromisoformat(item["day"]), item["opened"])
                   for item in stats.findings_per_day(session, now, CHART_DAYS)]
        latest, _ = query_findings(session, FindingFilters(), limit=LATEST,
                                   order="last_seen", descending=True)
        active = apps.active_bundle(session)
        trend = history_store.history(session, now.date(), CHART_DAYS)
        remediation = history_store.time_to_remediate(session, now.date(), CHART_DAYS)
        groups = history_store.groups(session)
    bundle = active[1] if active else None
    return dashboard.page(
        request, "overview.html",
        compliance=compliance,
        revoked=by_state["revoked"],
        silent_after=quiet.total_seconds(),
        by_app=by_app,
        chart=charts.bar_chart(per_day, "opened-chart",
                               f"Findings opened per day, last {CHART_DAYS} days"),
        per_day=per_day,
        trend=trend,
        trend_chart=charts.percent_line_chart(
            [(dt.date.fromisoformat(point["day"]), point["compliant_percent"])
             for point in trend], "trend-chart",
            f"Machines compliant per day, last {CHART_DAYS} days"),
        remediation=remediation,
        groups=groups,
        chart_days=CHART_DAYS,
        latest=latest,
        banned=apps.banned_with_alternatives(bundle, context.catalog) if bundle else [],
        names=apps.app_names(bundle, context.catalog),
        active_number=active[0] if active else None,
    )
