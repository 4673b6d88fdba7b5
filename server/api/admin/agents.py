"""`/api/v1/agents`: the fleet — last seen, OS, agent and policy versions, state, open findings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from server.api.admin.common import ROUTER_ERRORS, invalid_cursor, not_found, silent_after
from server.api.deps import AdminDep, ContextDep, ServerContext, SessionDep, ViewerDep
from server.api.errors import ApiError
from server.db import utcnow
from server.models import Agent
from server.schemas.agents import AgentListQuery, AgentPage, AgentView
from server.schemas.errors import error_responses
from server.store import agents, agents_query
from server.store.listing import CursorError

router = APIRouter(prefix="/api/v1", tags=["agents"], responses=ROUTER_ERRORS)


@router.get("/agents")
def list_agents(
    principal: ViewerDep, query: Annotated[AgentListQuery, Query()], session: SessionDep,
    context: ContextDep,
) -> AgentPage:
    """Agents by hostname; `state` is active, silent (not seen for a few check-in intervals)
    or revoked."""
    try:
        items, next_cursor = agents_query.query_agents(
            session, query, utcnow(), silent_after(context), query.limit, query.cursor)
    except CursorError as exc:
        raise invalid_cursor(exc) from exc
    return AgentPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get("/agents/{agent_id}", responses=error_responses(404))
def get_agent(
    principal: ViewerDep, agent_id: str, session: SessionDep, context: ContextDep
) -> AgentView:
    row = agents.get(session, agent_id)
    if row is None:
        raise not_found(f"agent {agent_id}")
    return _describe(session, context, row)


@router.post("/agents/{agent_id}/revoke", responses=error_responses(404))
def revoke_agent(
    principal: AdminDep, agent_id: str, session: SessionDep, context: ContextDep
) -> AgentView:
    """The agent's token stops working at once; the machine cannot enroll itself back."""
    row = agents.revoke(session, agent_id, principal.actor)
    if row is None:
        raise not_found(f"agent {agent_id}")
    session.commit()
    return _describe(session, context, row)


@router.post("/agents/{agent_id}/readmit", responses=error_responses(404, 409))
def readmit_agent(
    principal: AdminDep, agent_id: str, session: SessionDep, context: ContextDep
) -> AgentView:
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


def _describe(session: Session, context: ServerContext, row: Agent) -> AgentView:
    return AgentView.model_validate(
        agents_query.describe(session, [row], utcnow(), silent_after(context))[0])
