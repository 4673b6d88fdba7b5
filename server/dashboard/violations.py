"""Violations: the review list (one row per machine x denied app), one violation with its
findings as evidence beneath, triage, and the list's filter as a CSV or JSON download.

Which violations match is answered by `server.store.violations_query`, the
same code behind the API's list and export.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from server import exports
from server.api.params import RowId
from server.dashboard import apps, listing
from server.dashboard.auth import AnalystPost, Viewer
from server.dashboard.web import (
    DashboardDep,
    DashboardRoute,
    PageError,
    redirect,
)
from server.models import TRIAGE_STATES
from server.store import agents, findings, violations
from server.store.violations_query import ViolationFilters, count_violations, query_violations

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

SORTS = {"last_seen": "Last seen", "first_seen": "First seen"}
MAX_COMMENT = 4000
NOTICES = {"triaged": "Triage saved, on the violation and each of its findings."}


@router.get("/violations")
def violation_list(
    request: Request,
    dashboard: DashboardDep,
    person: Viewer,
    order: str = Query("last_seen"),
    direction: str = Query("desc", alias="dir"),
    cursor: str = Query("", max_length=2048),
) -> Response:
    params = request.query_params
    if order not in SORTS or direction not in ("asc", "desc"):
        raise PageError(400, f"Sort by one of {', '.join(SORTS)}, ascending or descending.")
    context = request.app.state.context
    with context.read_sessions() as session:
        active = apps.active_bundle(session)
        page = listing.read_page(
            session, lambda: listing.filters_from(ViolationFilters.from_query, params),
            query_violations, count_violations, order=order, descending=direction == "desc",
            cursor=cursor)
    names = apps.app_names(active[1] if active else None, context.catalog)
    return dashboard.page(
        request, "violations.html", status=400 if page.problems else 200,
        rows=page.rows, total=page.total,
        filters=listing.form_values(ViolationFilters, params), problems=page.problems,
        order=order, direction=direction, next_cursor=page.next_cursor, paged=bool(cursor),
        sorts=SORTS,
        names=names, app_choices=sorted(names.items(), key=lambda item: item[1].lower()),
        statuses=("open", "resolved"), triage_states=TRIAGE_STATES)


@router.get("/violations/export.csv")
def export_csv(request: Request, person: Viewer) -> Response:
    return exports.violations_download(request.app.state.context, _filters(request), "csv")


@router.get("/violations/export.json")
def export_json(request: Request, person: Viewer) -> Response:
    return exports.violations_download(request.app.state.context, _filters(request), "json")


def _filters(request: Request) -> ViolationFilters:
    return listing.download_filters(ViolationFilters.from_query, request)


@router.get("/violations/{violation_id:int}")
def violation_detail(request: Request, dashboard: DashboardDep, person: Viewer,
                     violation_id: RowId, notice: str = "") -> Response:
    context = request.app.state.context
    with context.read_sessions() as session:
        row = violations.get(session, violation_id)
        if row is None:
            raise PageError(404, f"There is no violation {violation_id}.")
        agent = agents.get(session, row.agent_id)
        violation = violations.as_dict(row, agent)
        evidence = [findings.as_dict(finding, agent)
                    for finding in violations.findings_of(session, row)]
        active = apps.active_bundle(session)
    bundle = active[1] if active else None
    return dashboard.page(
        request, "violation.html", violation=violation, evidence=evidence,
        host=agents.as_dict(agent) if agent else None,
        alternatives=apps.alternatives_for(violation["app"], bundle, context.catalog),
        names=apps.app_names(bundle, context.catalog), triage_states=TRIAGE_STATES,
        can_triage=person.has_role("analyst"), notice=NOTICES.get(notice, ""))


@router.post("/violations/{violation_id:int}/triage")
def triage_violation(
    request: Request,
    person: AnalystPost,
    violation_id: RowId,
    state: Annotated[str, Form()],
    comment: Annotated[str, Form(max_length=MAX_COMMENT)] = "",
) -> Response:
    if state not in TRIAGE_STATES:
        raise PageError(400, f"Choose a triage state: {', '.join(TRIAGE_STATES)}.")
    with request.app.state.context.write_sessions() as session:
        if violations.set_triage(session, violation_id, state, comment.strip() or None,
                                 person.actor) is None:
            raise PageError(404, f"There is no violation {violation_id}.")
        session.commit()
    return redirect(f"/violations/{violation_id}?notice=triaged")
