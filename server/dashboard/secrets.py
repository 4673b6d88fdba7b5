"""Enrollment secrets (administrators): create one (shown once), list them, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from server.api.params import RowId
from server.dashboard.auth import Admin, AdminPost
from server.dashboard.web import DashboardDep, DashboardRoute, PageError, redirect
from server.store import enroll_secrets

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@router.get("/secrets")
def secret_list(request: Request, dashboard: DashboardDep, person: Admin) -> Response:
    with request.app.state.context.read_sessions() as session:
        rows = enroll_secrets.list_all(session)
    return dashboard.page(request, "secrets.html", secrets=sorted(rows, key=lambda r: -r.id),
                          created=None, created_row=None)


@router.post("/secrets")
def create_secret(
    request: Request,
    dashboard: DashboardDep,
    person: AdminPost,
    group: Annotated[str, Form(max_length=255)] = "",
    note: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    with request.app.state.context.write_sessions() as session:
        row, secret = enroll_secrets.create(session, group=group.strip() or None,
                                            note=note.strip() or None, actor=person.actor)
        session.commit()
        rows = enroll_secrets.list_all(session)
    # Answered directly, not redirected: the secret exists in clear only in this response
    # (which, like every dashboard page, is sent with Cache-Control: no-store).
    return dashboard.page(request, "secrets.html", status=201,
                          secrets=sorted(rows, key=lambda r: -r.id), created=secret,
                          created_row=row)


@router.post("/secrets/{secret_id:int}/revoke")
def revoke_secret(request: Request, person: AdminPost, secret_id: RowId) -> Response:
    with request.app.state.context.write_sessions() as session:
        if enroll_secrets.revoke(session, secret_id, actor=person.actor) is None:
            raise PageError(404, f"There is no enrollment secret {secret_id}.")
        session.commit()
    return redirect("/secrets")
