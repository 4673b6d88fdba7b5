"""Re-enrollments awaiting an administrator: a known machine enrolled without proving that
it holds the machine's key (server.crypto.enrollment_proof).

One request per agent. It is held, not refused: the caller may be the machine itself,
reinstalled (a new key) or with an agent from before keys, or someone else holding an
enrollment secret and this machine's id. Until an administrator decides, nothing about
the agent changes — its token keeps working. Approved, the request's key may enroll
once (and is bound); rejected, the request is dropped. A request from another key while
one is pending replaces it, and `keys_seen` counts them: more than one means two
parties claim the machine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db import utcnow
from server.models import Agent, ReenrollmentRequest
from server.store import audit

_MAX_ADDRESS = 255


class ReenrollmentPending(Exception):
    """The enrollment was held for an administrator's approval; `reason` says why."""

    def __init__(self, agent_id: str, reason: str) -> None:
        super().__init__(reason)
        self.agent_id = agent_id
        self.reason = reason


class NoReenrollmentError(Exception):
    """Approve or reject asked for an agent with no pending re-enrollment."""


class ReenrollmentChangedError(Exception):
    """The pending request no longer carries the key the administrator approved."""


def get(session: Session, agent_id: str) -> ReenrollmentRequest | None:
    return session.get(ReenrollmentRequest, agent_id)


def for_agents(session: Session, agent_ids: Iterable[str]) -> dict[str, ReenrollmentRequest]:
    ids = list(agent_ids)
    if not ids:
        return {}
    rows = session.scalars(sa.select(ReenrollmentRequest)
                           .where(ReenrollmentRequest.agent_id.in_(ids)))
    return {row.agent_id: row for row in rows}


def list_pending(session: Session, limit: int) -> list[tuple[ReenrollmentRequest, Agent]]:
    """Pending requests with their agents, oldest request first."""
    rows = session.execute(
        sa.select(ReenrollmentRequest, Agent).join(Agent)
        .order_by(ReenrollmentRequest.requested_at, ReenrollmentRequest.agent_id)
        .limit(limit))
    return [(request, agent) for request, agent in rows]


def hold(session: Session, agent: Agent, facts: dict[str, Any], public_key: str | None,
         address: str, reason: str, actor: str, now: dt.datetime) -> ReenrollmentPending:
    """Record the unproven enrollment of `agent` (the caller holds its row lock) and
    return the exception to answer it with. Audited when the request is new or from
    another key; a retry of the same request only counts."""
    row = get(session, agent.id)
    if row is not None and row.public_key == public_key:
        row.attempts += 1
        row.last_attempt_at = now
        row.facts = facts
        row.address = address[:_MAX_ADDRESS]
        row.reason = reason
        return ReenrollmentPending(agent.id, _pending_reason(row))
    if row is not None and row.approved_at is not None:
        # Approved for another key, which has not come yet: that approval stands.
        return ReenrollmentPending(agent.id, "an administrator approved another key's "
                                   "re-enrollment of this machine; this one must wait")
    if row is None:
        row = ReenrollmentRequest(agent_id=agent.id, keys_seen=0)
        session.add(row)
    row.public_key = public_key
    row.facts = facts
    row.address = address[:_MAX_ADDRESS]
    row.reason = reason
    row.requested_at = row.last_attempt_at = now
    row.attempts = 1
    row.keys_seen += 1
    session.flush()
    audit.record(session, actor, "agent.reenroll_pending", f"agent:{agent.id}",
                 after=as_dict(row))
    return ReenrollmentPending(agent.id, _pending_reason(row))


def _pending_reason(row: ReenrollmentRequest) -> str:
    return (f"this machine is enrolled already (agent {row.agent_id}) and this request does "
            f"not prove it holds the machine's key: {row.reason}. It waits for an "
            "administrator: approve it on the host page or with `warden agents "
            f"approve-reenroll {row.agent_id}`")


def take_approved(session: Session, agent_id: str, public_key: str | None) -> bool:
    """Whether an administrator approved `public_key` for this agent; the approval is
    used up by the enrollment it lets through."""
    row = get(session, agent_id)
    if row is None or row.approved_at is None or row.public_key != public_key:
        return False
    session.delete(row)
    return True


def approve(session: Session, agent_id: str, actor: str, *, check_key: bool = False,
            expected_key: str | None = None) -> ReenrollmentRequest:
    """Let the pending request enroll once. With `check_key`, `expected_key` is the key
    the administrator looked at: ReenrollmentChangedError if another key has taken its
    place since. NoReenrollmentError when nothing is pending."""
    row = _pending(session, agent_id)
    if check_key and row.public_key != expected_key:
        raise ReenrollmentChangedError(agent_id)
    before = as_dict(row)
    if row.approved_at is None:
        row.approved_at = utcnow()
        row.approved_by = actor
    session.flush()
    audit.record(session, actor, "agent.reenroll_approve", f"agent:{agent_id}", before=before,
                 after=as_dict(row))
    return row


def reject(session: Session, agent_id: str, actor: str) -> ReenrollmentRequest:
    """Drop the pending request (an agent that asks again is held again)."""
    row = _pending(session, agent_id)
    before = as_dict(row)
    session.delete(row)
    session.flush()
    audit.record(session, actor, "agent.reenroll_reject", f"agent:{agent_id}", before=before)
    return row


def _pending(session: Session, agent_id: str) -> ReenrollmentRequest:
    row = session.get(ReenrollmentRequest, agent_id, with_for_update=True)
    if row is None:
        raise NoReenrollmentError(agent_id)
    return row


def as_dict(row: ReenrollmentRequest) -> dict[str, Any]:
    return {
        "agent_id": row.agent_id,
        "public_key": row.public_key,
        "hostname": str(row.facts.get("hostname", "")),
        "facts": row.facts,
        "address": row.address,
        "reason": row.reason,
        "requested_at": row.requested_at.isoformat(),
        "last_attempt_at": row.last_attempt_at.isoformat(),
        "attempts": row.attempts,
        "keys_seen": row.keys_seen,
        "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "approved_by": row.approved_by,
    }
