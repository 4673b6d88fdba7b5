"""`/api/v1/agents`: the fleet — last seen, OS, agent and policy versions, state, open findings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from server.api.admin.common import (
    PAGING,
    check_params,
    cursor_of,
    invalid_cursor,
    invalid_query,
    limit_of,
    not_found,
    page,
    silent_after,
)
from server.api.deps import AdminDep, ContextDep, ServerContext, SessionDep, ViewerDep
from server.api.errors import ApiError
from server.db import utcnow
from server.models import Agent
from server.store import agents, agents_query
from server.store.agents_query import AgentFilters
from server.store.listing import CursorError, FilterError

router = APIRouter(prefix="/api/v1", tags=["agents"])

_LIST_PARAMS = (*AgentFilters.names(), *PAGING)
Text = Annotated[str | None, Query()]


@router.get("/agents")
def list_agents(
    principal: ViewerDep, request: Request, session: SessionDep, context: ContextDep,
    state: Text = None, group: Text = None, host: Text = None, os: Text = None,
    limit: Text = None, cursor: Text = None,
) -> dict[str, Any]:
    """Agents by hostname; `state` is active, silent (not seen for a few check-in intervals)
    or revoked."""
    check_params(request, _LIST_PARAMS)
    try:
        filters = AgentFilters.from_query(request.query_params)
    except FilterError as exc:
        raise invalid_query(exc) from exc
    try:
        items, next_cursor = agents_query.query_agents(
            session, filters, utcnow(), silent_after(context), limit_of(request),
            cursor_of(request))
    except CursorError as exc:
        raise invalid_cursor(exc) from exc
    return page(items, next_cursor)


@router.get("/agents/{agent_id}")
def get_agent(
    principal: ViewerDep, agent_id: str, session: SessionDep, context: ContextDep
) -> dict[str, Any]:
    row = agents.get(session, agent_id)
    if row is None:
        raise not_found(f"agent {agent_id}")
    return _describe(session, context, row)


@router.post("/agents/{agent_id}/revoke")
def revoke_agent(
    principal: AdminDep, agent_id: str, session: SessionDep, context: ContextDep
) -> dict[str, Any]:
    """The agent's token stops working at once; the machine cannot enroll itself back."""
    row = agents.revoke(session, agent_id, principal.actor)
    if row is None:
        raise not_found(f"agent {agent_id}")
    session.commit()
    return _describe(session, context, row)


@router.post("/agents/{agent_id}/readmit")
def readmit_agent(
    principal: AdminDep, agent_id: str, session: SessionDep, context: ContextDep
) -> dict[str, Any]:
    """Undo a revocation: the machine may enroll again with a valid enrollment secret, and
    gets a new token (the old one stays refused). The agent id, findings and history stay."""
    try:
        row = agents.readmit(session, agent_id, principal.actor)
    except agents.AgentNotRevokedError as exc:
        raise ApiError(409, f"agent {agent_id} is not revoked", code="agent_not_revoked") from exc
    if row is None:
        raise not_found(f"agent {agent_id}")
    session.commit()
    return _describe(session, context, row)


def _describe(session: Session, context: ServerContext, row: Agent) -> dict[str, Any]:
    return agents_query.describe(session, [row], utcnow(), silent_after(context))[0]
