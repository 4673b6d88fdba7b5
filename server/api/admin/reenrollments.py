"""Re-enrollments awaiting approval: list them, approve one, reject one.

A known machine that enrolls without proving it holds the machine's key is held
(server.store.reenrollments). An administrator approves it — the requesting agent
may then enroll once, and its key is bound — or rejects it. Both are audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from server.api.admin.common import check_params, limit_of, not_found
from server.api.deps import AdminDep, SessionDep, ViewerDep
from server.api.errors import ApiError
from server.models import ReenrollmentRequest
from server.store import agents, reenrollments

router = APIRouter(prefix="/api/v1", tags=["agents"])


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Any]


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail


class Reenrollment(BaseModel):
    agent_id: str
    agent_hostname: str = Field(description="the enrolled machine's hostname")
    public_key: str | None = Field(description="the key the request asks to bind (base64); "
                                               "null from an agent before machine keys")
    hostname: str = Field(description="the hostname the request gives")
    facts: dict[str, Any] = Field(description="the host facts the request gives")
    address: str = Field(description="where the request came from")
    reason: str = Field(description="why it was not let in by itself")
    requested_at: dt.datetime
    last_attempt_at: dt.datetime
    attempts: int = Field(description="how often this request asked (the agent retries)")
    keys_seen: int = Field(description="how many different keys asked while pending: more "
                                       "than one means two parties claim this machine")
    approved_at: dt.datetime | None
    approved_by: str | None


class ReenrollmentList(BaseModel):
    items: list[Reenrollment]
    next_cursor: None = None


class Approval(BaseModel):
    public_key: str | None = Field(
        default=None, description="the key the administrator reviewed; when given, the "
                                  "approval applies only if the request still carries it")


_NOT_PENDING = {"model": ErrorBody, "description": "`not_found`: no such agent, or no "
                                                   "re-enrollment of it is pending"}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no valid API token"},
    403: {"model": ErrorBody, "description": "the token's role is not admin"},
    404: _NOT_PENDING,
}


@router.get("/reenrollments", response_model=ReenrollmentList, responses={
    401: _ADMIN_ERRORS[401], 422: {"model": ErrorBody, "description": "a bad query"}})
def list_reenrollments(principal: ViewerDep, request: Request,
                       session: SessionDep) -> ReenrollmentList:
    """Re-enrollments awaiting a decision (or approved and not yet used), oldest first."""
    check_params(request, ("limit",))
    rows = reenrollments.list_pending(session, limit_of(request))
    return ReenrollmentList(items=[_view(row, agent.hostname) for row, agent in rows])


@router.post("/agents/{agent_id}/reenrollment/approve", response_model=Reenrollment,
             responses={**_ADMIN_ERRORS, 409: {
                 "model": ErrorBody, "description": "`reenrollment_changed`: another key "
                                                    "asked since; review it again"}})
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


@router.post("/agents/{agent_id}/reenrollment/reject", response_model=Reenrollment,
             responses=_ADMIN_ERRORS)
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
