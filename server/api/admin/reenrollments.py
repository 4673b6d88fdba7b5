"""Re-enrollments awaiting approval: list them, approve one, reject one.

A known machine that enrolls without proving it holds the machine's key is held
(server.store.reenrollments). An administrator approves it — the requesting agent
may then enroll once, and its key is bound — or rejects it. Both are audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from server.api.admin.common import ROUTER_ERRORS, not_found
from server.api.deps import AdminDep, SessionDep, ViewerDep
from server.api.errors import ApiError
from server.models import ReenrollmentRequest
from server.schemas.errors import error_responses
from server.schemas.reenrollments import (
    Approval,
    Reenrollment,
    ReenrollmentListQuery,
    ReenrollmentPage,
)
from server.store import agents, reenrollments

router = APIRouter(prefix="/api/v1", tags=["agents"], responses=ROUTER_ERRORS)


@router.get("/reenrollments")
def list_reenrollments(principal: ViewerDep, query: Annotated[ReenrollmentListQuery, Query()],
                       session: SessionDep) -> ReenrollmentPage:
    """Re-enrollments awaiting a decision (or approved and not yet used), oldest first."""
    rows = reenrollments.list_pending(session, query.limit)
    return ReenrollmentPage(items=[_view(row, agent.hostname) for row, agent in rows],
                            next_cursor=None)


@router.post("/agents/{agent_id}/reenrollment/approve", responses=error_responses(404, 409))
def approve_reenrollment(
    principal: AdminDep, agent_id: str, session: SessionDep,
    approval: Annotated[Approval | None, Body()] = None,
) -> Reenrollment:
    """Let the held request enroll once: its key is bound and it gets a new token (the
    agent's current token stops working then, not now)."""
    agent = agents.get(session, agent_id)
    if agent is None:
        raise not_found(f"agent {agent_id}")
    check_key = approval is not None and "public_key" in approval.model_fields_set
    try:
        row = reenrollments.approve(session, agent_id, principal.actor, check_key=check_key,
                                    expected_key=approval.public_key if approval else None)
    except reenrollments.NoReenrollmentError as exc:
        raise not_found(f"pending re-enrollment of agent {agent_id}") from exc
    except reenrollments.ReenrollmentChangedError as exc:
        raise ApiError(409, "another key asked to re-enroll this machine since it was "
                       "reviewed; review the request again", code="reenrollment_changed"
                       ) from exc
    view = _view(row, agent.hostname)
    session.commit()
    return view


@router.post("/agents/{agent_id}/reenrollment/reject", responses=error_responses(404))
def reject_reenrollment(principal: AdminDep, agent_id: str,
                        session: SessionDep) -> Reenrollment:
    """Drop the held request; the agent's current token keeps working. An agent that asks
    again is held again."""
    agent = agents.get(session, agent_id)
    if agent is None:
        raise not_found(f"agent {agent_id}")
    try:
        row = reenrollments.reject(session, agent_id, principal.actor)
    except reenrollments.NoReenrollmentError as exc:
        raise not_found(f"pending re-enrollment of agent {agent_id}") from exc
    view = _view(row, agent.hostname)
    session.commit()
    return view


def _view(row: ReenrollmentRequest, agent_hostname: str) -> Reenrollment:
    return Reenrollment.model_validate({**reenrollments.as_dict(row),
                                        "agent_hostname": agent_hostname})
