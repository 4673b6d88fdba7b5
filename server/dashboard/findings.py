"""Findings: the filtered, sorted, paged table; one finding's detail; triage.

Which findings match is answered by `server.store.findings_query`, the same
code behind the API's list and export, so the table, its CSV and the API
agree. The dashboard only adds what a form needs (server.dashboard.listing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from policies.vocabulary import FINDING_STATUSES, SENSORS, TRIAGE_STATES, VERDICTS
from server.api.params import RowId
from server.dashboard import apps, listing
from server.dashboard.auth import AnalystPost, Viewer
from server.dashboard.web import DashboardDep, DashboardRoute, PageError, redirect
from server.schemas.common import MAX_ROW_ID
from server.store import agents, findings, outcomes
from server.store.findings_query import FindingFilters, count_findings, query_findings

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

SORTS = {"last_seen": "Last seen", "first_seen": "First seen", "app": "App", "host": "Host"}
MAX_COMMENT = 4000
NOTICES = {"triaged": "Triage saved.",
           "exception_granted": "Exception granted: this machine takes it at its next "
                                "check-in and reports the app as excepted.",
           "exception_extended": "The exception in force for this machine was extended."}
MAX_BULK = 1000


@router.get("/findings")
def finding_list(
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
            session, lambda: listing.filters_from(FindingFilters.from_query, params),
            query_findings, count_findings, order=order, descending=direction == "desc",
            cursor=cursor)
    names = apps.app_names(active[1] if active else None, context.catalog)
    return dashboard.page(
        request, "findings.html", status=400 if page.problems else 200,
        rows=page.rows, total=page.total, filters=listing.form_values(FindingFilters, params),
        problems=page.problems, order=order, direction=direction,
        next_cursor=page.next_cursor, paged=bool(cursor), sorts=SORTS,
        names=names, app_choices=sorted(names.items(), key=lambda item: item[1].lower()),
        statuses=FINDING_STATUSES, triage_states=TRIAGE_STATES, sensors=SENSORS,
        verdicts=VERDICTS, can_triage=person.has_role("analyst"),
        notice=_bulk_notice(params), back=_this_list(request))


def _bulk_notice(params: Mapping[str, str]) -> str:
    count = params.get("count", "")
    if params.get("notice") != "triaged" or not count.isdigit():
        return ""
    return f"Triage saved for {count} finding{'' if count == '1' else 's'}."


def _this_list(request: Request) -> str:
    """This list's address without the notice, to come back to after a bulk triage."""
    kept = [(name, value) for name, value in request.query_params.multi_items()
            if name not in ("notice", "count")]
    return "/findings" + (f"?{urlencode(kept)}" if kept else "")


@router.get("/findings/{finding_id:int}")
def finding_detail(request: Request, dashboard: DashboardDep, person: Viewer,
                   finding_id: RowId, notice: str = "") -> Response:
    context = request.app.state.context
    with context.read_sessions() as session:
        row = findings.get(session, finding_id)
        if row is None:
            raise PageError(404, f"There is no finding {finding_id}.")
        agent = agents.get(session, row.agent_id)
        finding = findings.as_dict(row, agent)
        events = [findings.event_as_dict(event) for event in findings.timeline(session, row)]
        active = apps.active_bundle(session)
    bundle = active[1] if active else None
    return dashboard.page(
        request, "finding.html", finding=finding, events=events,
        told_user=outcomes.user_told(row.outcomes),
        host=agents.as_dict(agent) if agent else None,
        alternatives=_alternatives(finding, bundle, context.catalog),
        names=apps.app_names(bundle, context.catalog), triage_states=TRIAGE_STATES,
        can_triage=person.has_role("analyst"), notice=NOTICES.get(notice, ""))


@router.post("/findings/{finding_id:int}/triage")
def triage_finding(
    request: Request,
    person: AnalystPost,
    finding_id: RowId,
    state: Annotated[str, Form()],
    comment: Annotated[str, Form(max_length=MAX_COMMENT)] = "",
) -> Response:
    if state not in TRIAGE_STATES:
        raise PageError(400, f"Choose a triage state: {', '.join(TRIAGE_STATES)}.")
    with request.app.state.context.write_sessions() as session:
        if findings.set_triage(session, finding_id, state, comment.strip() or None,
                               person.actor) is None:
            raise PageError(404, f"There is no finding {finding_id}.")
        session.commit()
    return redirect(f"/findings/{finding_id}?notice=triaged")


@router.post("/findings/triage")
async def triage_selected(request: Request, person: AnalystPost) -> Response:
    """The list's bulk triage: the ticked findings to one state, all or none."""
    form = await request.form()
    ids = [int(value) for value in form.getlist("ids")
           if isinstance(value, str) and value.isdigit() and 0 < int(value) <= MAX_ROW_ID]
    state, comment = form.get("state"), form.get("comment") or ""
    back = form.get("back")
    if not ids:
        raise PageError(400, "Tick the findings to triage first.")
    if len(ids) > MAX_BULK:
        raise PageError(400, f"Triage at most {MAX_BULK} findings at once.")
    if state not in TRIAGE_STATES or not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise PageError(400, f"Choose a triage state ({', '.join(TRIAGE_STATES)}) and a "
                             f"comment of at most {MAX_COMMENT} characters.")
    with request.app.state.context.write_sessions() as session:
        _, missing = findings.set_triage_many(session, ids, str(state),
                                              comment.strip() or None, person.actor)
        if missing:
            session.rollback()
            raise PageError(404, "Nothing was changed: there is no finding "
                                 f"{', '.join(map(str, missing[:20]))}.")
        session.commit()
    # Back to the same filtered list; only a path of this dashboard.
    target = back if isinstance(back, str) and back.startswith("/findings") else "/findings"
    joiner = "&" if "?" in target else "?"
    return redirect(f"{target}{joiner}notice=triaged&count={len(set(ids))}")


def _alternatives(finding: dict[str, Any], bundle: dict[str, Any] | None,
                  catalog: Any) -> list[dict[str, Any]]:
    """What the person on that machine should use instead, with links."""
    found = apps.alternatives_for(finding["app"], bundle, catalog)
    stated = finding.get("alternative")
    if stated and all(item["id"] != stated for item in found):
        # The agent ran another policy version naming another app: show that one too.
        name = apps.app_names(bundle, catalog).get(stated, stated)
        found.insert(0, {"id": stated, "name": name, "homepage": "", "download_url": ""})
    return found
