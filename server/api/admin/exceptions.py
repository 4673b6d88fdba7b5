"""`/api/v1/exceptions` and `/api/v1/exception-requests`: grant, list, show, revoke; the
requests people make at their machines, approved (an exception is granted) or denied.

Every change is audited in its own transaction (server.store.exceptions); agents learn
of it, signed, at their next check-in.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from server.api.admin.common import ROUTER_ERRORS, not_found
from server.api.deps import AdminDep, ContextDep, SessionDep, ViewerDep
from server.api.errors import ApiError
from server.api.params import RowId
from server.db import utcnow
from server.exception_rules import GrantRefused, check_grant
from server.schemas.errors import error_responses
from server.schemas.exceptions import (
    Approval,
    Denial,
    ExceptionGrant,
    ExceptionListQuery,
    ExceptionPage,
    ExceptionView,
    GrantAnswer,
    RequestListQuery,
    RequestPage,
    RequestView,
)
from server.store import agents, exceptions

router = APIRouter(prefix="/api/v1", tags=["exceptions"], responses=ROUTER_ERRORS)


def refused(exc: GrantRefused) -> ApiError:
    return ApiError(422, exc.message, code="validation_error",
                    details=[{"loc": ["body", exc.field], "field": exc.field,
                              "message": exc.message, "type": "value_error"}])


@router.post("/exceptions", status_code=201,
             responses={200: {"model": GrantAnswer,
                              "description": "an exception in force was extended (merged)"}})
def grant_exception(principal: AdminDep, body: ExceptionGrant, session: SessionDep,
                    context: ContextDep, response: Response) -> GrantAnswer:
    """Let `app` run on one machine (`host`) or a group until `until`. An exception in force
    for the same app and scope is extended, not duplicated (200, `merged`)."""
    now = utcnow()
    try:
        grant = check_grant(session, context.catalog, body.app, body.host, body.group,
                            body.until, body.reason, now)
    except GrantRefused as exc:
        raise refused(exc) from exc
    row, merged = exceptions.grant(session, grant.app, grant.scope, grant.until, grant.reason,
                                   principal.actor, now)
    view = _exception_view(session, row.id, now)
    session.commit()
    if merged:
        response.status_code = 200
    return GrantAnswer.model_validate({**view.model_dump(), "merged": merged})


@router.get("/exceptions")
def list_exceptions(principal: ViewerDep, query: Annotated[ExceptionListQuery, Query()],
                    session: SessionDep) -> ExceptionPage:
    """Newest first."""
    now = utcnow()
    rows = exceptions.list_exceptions(session, state=query.state, app=query.app,
                                      agent_id=query.host, group=query.group,
                                      limit=query.limit, now=now)
    return ExceptionPage(items=[ExceptionView.model_validate(
        exceptions.as_dict(row, now, hostname)) for row, hostname in rows], next_cursor=None)


@router.get("/exceptions/{exception_id:int}", responses=error_responses(404))
def show_exception(principal: ViewerDep, exception_id: RowId,
                   session: SessionDep) -> ExceptionView:
    return _exception_view(session, exception_id, utcnow())


@router.post("/exceptions/{exception_id:int}/revoke", responses=error_responses(404))
def revoke_exception(principal: AdminDep, exception_id: RowId,
                     session: SessionDep) -> ExceptionView:
    """End it now: agents apply the ban again at their next check-in."""
    now = utcnow()
    try:
        exceptions.revoke(session, exception_id, principal.actor, now)
    except exceptions.NoSuchException as exc:
        raise not_found(f"exception {exception_id}") from exc
    view = _exception_view(session, exception_id, now)
    session.commit()
    return view


def _exception_view(session: SessionDep, exception_id: int, now: dt.datetime) -> ExceptionView:
    row = exceptions.get(session, exception_id)
    if row is None:
        raise not_found(f"exception {exception_id}")
    hostname = row.agent_id and _hostname(session, row.agent_id)
    return ExceptionView.model_validate(exceptions.as_dict(row, now, hostname or None))


def _hostname(session: SessionDep, agent_id: str) -> str | None:
    agent = agents.get(session, agent_id)
    return agent.hostname if agent else None


# -- requests -----------------------------------------------------------------------


@router.get("/exception-requests")
def list_requests(principal: ViewerDep, query: Annotated[RequestListQuery, Query()],
                  session: SessionDep) -> RequestPage:
    """Pending ones oldest first; otherwise newest first."""
    rows = exceptions.list_requests(session, query.status, query.limit)
    return RequestPage(items=[RequestView.model_validate(exceptions.request_dict(row, host))
                              for row, host in rows], next_cursor=None)


@router.get("/exception-requests/{request_id:int}", responses=error_responses(404))
def show_request(principal: ViewerDep, request_id: RowId, session: SessionDep) -> RequestView:
    found = exceptions.get_request(session, request_id)
    if found is None:
        raise not_found(f"exception request {request_id}")
    return RequestView.model_validate(exceptions.request_dict(*found))


@router.post("/exception-requests/{request_id:int}/approve",
             responses=error_responses(404, 409))
def approve_request(principal: AdminDep, request_id: RowId, session: SessionDep,
                    approval: Annotated[Approval | None, Body()] = None) -> RequestView:
    """Grant the app on the asking machine for `days` (the asked-for days by default)."""
    now = utcnow()
    found = exceptions.get_request(session, request_id)
    if found is None:
        raise not_found(f"exception request {request_id}")
    days = approval.days if approval and approval.days else found[0].days
    try:
        exceptions.approve(session, request_id, now + dt.timedelta(days=days), principal.actor,
                           approval.comment if approval else "", now)
    except exceptions.AlreadyDecided as exc:
        raise _decided(request_id, exc) from exc
    view = RequestView.model_validate(exceptions.request_dict(found[0], found[1]))
    session.commit()
    return view


@router.post("/exception-requests/{request_id:int}/deny", responses=error_responses(404, 409))
def deny_request(principal: AdminDep, request_id: RowId, session: SessionDep,
                 denial: Annotated[Denial | None, Body()] = None) -> RequestView:
    now = utcnow()
    found = exceptions.get_request(session, request_id)
    if found is None:
        raise not_found(f"exception request {request_id}")
    try:
        exceptions.deny(session, request_id, principal.actor,
                        denial.comment if denial else "", now)
    except exceptions.AlreadyDecided as exc:
        raise _decided(request_id, exc) from exc
    view = RequestView.model_validate(exceptions.request_dict(found[0], found[1]))
    session.commit()
    return view


def _decided(request_id: int, exc: exceptions.AlreadyDecided) -> ApiError:
    return ApiError(409, f"exception request {request_id} was already {exc}",
                    code="already_decided")
