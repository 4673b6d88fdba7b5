"""Hosts: every enrolled machine, how recently it spoke, and what is open on it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from server.dashboard import apps
from server.dashboard.auth import AdminPost, Viewer
from server.dashboard.web import (
    DashboardDep,
    DashboardRoute,
    PageError,
    problem_text,
    redirect,
)
from server.db import utcnow
from server.schemas.filters import AgentFilters
from server.settings import ServerSettings
from server.store import agents, reenrollments
from server.store.agents_query import STATES, count_agents, describe, query_agents
from server.store.findings_query import FindingFilters, query_findings
from server.store.listing import CursorError, FilterError

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

PAGE_SIZE = 50
HOST_FINDINGS = 200
# Fixed texts for the notice after a redirect: the URL never carries text to show.
NOTICES = {
    "revoked": "Agent revoked: its token no longer works and the machine cannot enroll.",
    "readmitted": "Machine re-admitted: it can enroll again with an enrollment secret and "
                  "gets a new token. Its old token stays refused.",
    "reenroll-approved": "Re-enrollment approved: the requesting agent may enroll once; its "
                         "key is then bound and the current token stops working.",
    "exception_granted": "Exception granted: this machine takes it at its next check-in.",
    "exception_extended": "The exception in force for this machine was extended.",
    "reenroll-rejected": "Re-enrollment rejected: the request is dropped and nothing about "
                         "the agent changed.",
}


def silent_after(settings: ServerSettings) -> dt.timedelta:
    """How long without a check-in makes an agent silent (as for metrics and the API)."""
    return settings.silent_after


@router.get("/hosts")
def host_list(request: Request, dashboard: DashboardDep, person: Viewer,
              cursor: str = Query("", max_length=2048)) -> Response:
    params = dict(request.query_params)
    try:
        filters = AgentFilters.from_query(params)
    except FilterError as exc:
        raise PageError(400, problem_text(exc)) from exc
    context = request.app.state.context
    now = utcnow()
    quiet = silent_after(context.settings)
    with context.read_sessions() as session:
        try:
            hosts, next_cursor = query_agents(session, filters, now, quiet, limit=PAGE_SIZE,
                                              cursor=cursor or None)
        except CursorError as exc:
            raise PageError(400, str(exc)) from exc
        total = count_agents(session, filters, now, quiet)
    shown = {name: params.get(name, "") for name in AgentFilters.names()}
    return dashboard.page(request, "hosts.html", hosts=hosts, total=total, filters=shown,
                          states=STATES, next_cursor=next_cursor, paged=bool(cursor))


@router.get("/hosts/{agent_id}")
def host_detail(request: Request, dashboard: DashboardDep, person: Viewer,
                agent_id: str, notice: str = "") -> Response:
    context = request.app.state.context
    now = utcnow()
    with context.read_sessions() as session:
        row = agents.get(session, agent_id)
        if row is None:
            raise PageError(404, "There is no such host.")
        host = describe(session, [row], now, silent_after(context.settings))[0]
        open_findings, more_open = query_findings(
            session, FindingFilters(agent_id=agent_id, status="open"), limit=HOST_FINDINGS)
        resolved, more_resolved = query_findings(
            session, FindingFilters(agent_id=agent_id, status="resolved"), limit=HOST_FINDINGS)
        active = apps.active_bundle(session)
    bundle = active[1] if active else None
    installed = [item for item in open_findings
                 if item["sensor"] == "installed" and item["verdict"] == "deny"]
    return dashboard.page(
        request, "host.html", host=host, open_findings=open_findings, resolved=resolved,
        truncated=bool(more_open or more_resolved), installed=installed, limit=HOST_FINDINGS,
        names=apps.app_names(bundle, context.catalog), notice=NOTICES.get(notice, ""))


@router.post("/hosts/{agent_id}/revoke")
def revoke_host(request: Request, person: AdminPost, agent_id: str) -> Response:
    with request.app.state.context.write_sessions() as session:
        if agents.revoke(session, agent_id, actor=person.actor) is None:
            raise PageError(404, "There is no such host.")
        session.commit()
    return redirect(f"/hosts/{agent_id}?notice=revoked")


@router.post("/hosts/{agent_id}/readmit")
def readmit_host(request: Request, person: AdminPost, agent_id: str) -> Response:
    with request.app.state.context.write_sessions() as session:
        try:
            row = agents.readmit(session, agent_id, actor=person.actor)
        except agents.AgentNotRevokedError as exc:
            raise PageError(409, "This host is not revoked.", title="Not revoked") from exc
        if row is None:
            raise PageError(404, "There is no such host.")
        session.commit()
    return redirect(f"/hosts/{agent_id}?notice=readmitted")


@router.post("/hosts/{agent_id}/reenrollment/approve")
def approve_reenrollment(request: Request, person: AdminPost, agent_id: str,
                         public_key: Annotated[str, Form(max_length=64)] = "") -> Response:
    # The key shown on the page: if another asked since, the administrator looks again.
    with request.app.state.context.write_sessions() as session:
        try:
            reenrollments.approve(session, agent_id, person.actor, check_key=True,
                                  expected_key=public_key or None)
        except reenrollments.NoReenrollmentError as exc:
            raise PageError(404, "No re-enrollment of this host is pending.") from exc
        except reenrollments.ReenrollmentChangedError as exc:
            raise PageError(409, "Another key asked to re-enroll this host since the page "
                            "was shown; review the request again.",
                            title="Request changed") from exc
        session.commit()
    return redirect(f"/hosts/{agent_id}?notice=reenroll-approved")


@router.post("/hosts/{agent_id}/reenrollment/reject")
def reject_reenrollment(request: Request, person: AdminPost, agent_id: str) -> Response:
    with request.app.state.context.write_sessions() as session:
        try:
            reenrollments.reject(session, agent_id, person.actor)
        except reenrollments.NoReenrollmentError as exc:
            raise PageError(404, "No re-enrollment of this host is pending.") from exc
        session.commit()
    return redirect(f"/hosts/{agent_id}?notice=reenroll-rejected")
