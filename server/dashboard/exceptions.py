"""Exceptions and requests: the list of both, a grant form, one-click grants from a finding
or a host ("allow on this machine for 30 days"), revoke, and approve / deny a request."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from policies.exceptions import MAX_EXCEPTION_DAYS
from server.api.params import RowId
from server.dashboard.auth import AdminPost, Viewer
from server.dashboard.sessions import Person
from server.dashboard.web import (
    Dashboard,
    DashboardDep,
    DashboardRoute,
    PageError,
    redirect,
    with_query,
)
from server.db import utcnow
from server.exception_rules import GrantRefused, check_grant
from server.store import exceptions

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)
NOTICES = {"granted": "Exception granted: the machine takes it at its next check-in.",
           "extended": "An exception in force was extended.",
           "revoked": "Exception revoked: the ban applies again from the next check-in.",
           "approved": "Request approved: the person is told at the next check-in.",
           "denied": "Request denied: the person is told at the next check-in."}


@router.get("/exceptions")
def exception_list(request: Request, dashboard: DashboardDep, person: Viewer,
                   notice: str = "") -> Response:
    return _page(request, dashboard, person, NOTICES.get(notice, ""))


def _page(request: Request, dashboard: Dashboard, person: Person, notice: str = "",
          error: str = "", status: int = 200) -> Response:
    now = utcnow()
    with request.app.state.context.read_sessions() as session:
        active = [exceptions.as_dict(row, now, host) for row, host in
                  exceptions.list_exceptions(session, state="active", now=now)]
        pending = [exceptions.request_dict(row, host) for row, host in
                   exceptions.list_requests(session, "pending")]
        decided = [exceptions.request_dict(row, host) for row, host in
                   exceptions.list_requests(session, None, limit=50)
                   if row.status != "pending"]
    return dashboard.page(request, "exceptions.html", status=status, active=active,
                          pending=pending, decided=decided, notice=notice, error=error,
                          can_decide=person.has_role("admin"), max_days=MAX_EXCEPTION_DAYS)


@router.post("/exceptions")
def grant(
    request: Request, dashboard: DashboardDep, person: AdminPost,
    app: Annotated[str, Form(max_length=64)],
    host: Annotated[str, Form(max_length=255)] = "",
    group: Annotated[str, Form(max_length=255)] = "",
    days: Annotated[int, Form(ge=1, le=MAX_EXCEPTION_DAYS)] = 30,
    reason: Annotated[str, Form(max_length=4096)] = "",
    back: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    """The grant form, and the one-click button on findings and hosts (which send `back`)."""
    now = utcnow()
    context = request.app.state.context
    with context.write_sessions() as session:
        try:
            checked = check_grant(session, context.catalog, app.strip(), host.strip() or None,
                                  group.strip() or None, now + dt.timedelta(days=days),
                                  reason, now)
        except GrantRefused as exc:
            # Shown beside the form, nothing stored; the text is never put in a URL.
            refused = f"{exc.field}: {exc.message}"
        else:
            refused = ""
            _, merged = exceptions.grant(session, checked.app, checked.scope, checked.until,
                                         checked.reason, person.actor, now)
            session.commit()
    if refused:
        return _page(request, dashboard, person, error=refused, status=422)
    notice = "extended" if merged else "granted"
    target = back if back.startswith("/") and not back.startswith("//") else "/exceptions"
    return redirect(with_query(target, {"notice": f"exception_{notice}"}
                               if target != "/exceptions" else {"notice": notice}))


@router.post("/exceptions/{exception_id:int}/revoke")
def revoke(request: Request, person: AdminPost, exception_id: RowId) -> Response:
    with request.app.state.context.write_sessions() as session:
        try:
            exceptions.revoke(session, exception_id, person.actor)
        except exceptions.NoSuchException as exc:
            raise PageError(404, f"There is no exception {exception_id}.") from exc
        session.commit()
    return redirect("/exceptions?notice=revoked")


@router.post("/exception-requests/{request_id:int}/approve")
def approve(request: Request, person: AdminPost, request_id: RowId,
            days: Annotated[int, Form(ge=1, le=MAX_EXCEPTION_DAYS)],
            comment: Annotated[str, Form(max_length=4096)] = "") -> Response:
    now = utcnow()
    with request.app.state.context.write_sessions() as session:
        try:
            exceptions.approve(session, request_id, now + dt.timedelta(days=days),
                               person.actor, comment.strip(), now)
        except (exceptions.NoSuchRequest, exceptions.AlreadyDecided) as exc:
            raise PageError(404 if isinstance(exc, exceptions.NoSuchRequest) else 400,
                            f"Request {request_id} is not pending.") from exc
        session.commit()
    return redirect("/exceptions?notice=approved")


@router.post("/exception-requests/{request_id:int}/deny")
def deny(request: Request, person: AdminPost, request_id: RowId,
         comment: Annotated[str, Form(max_length=4096)] = "") -> Response:
    with request.app.state.context.write_sessions() as session:
        try:
            exceptions.deny(session, request_id, person.actor, comment.strip())
        except (exceptions.NoSuchRequest, exceptions.AlreadyDecided) as exc:
            raise PageError(404 if isinstance(exc, exceptions.NoSuchRequest) else 400,
                            f"Request {request_id} is not pending.") from exc
        session.commit()
    return redirect("/exceptions?notice=denied")
