"""Exceptions and the requests for them: grant, extend, revoke, decide; audited.

A grant names an app and a scope (one agent, or a group). A second grant for the
same app and scope while one is in force is the same exception, extended to the
later `until` (never shortened: revoke to end one early). Agents get the ones that
concern them signed at check-in (`signed_for`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.exceptions import (
    EXCEPTIONS_PURPOSE,
    ExceptionRequestInfo,
    ExceptionsDocument,
    GrantedException,
    RequestAnswer,
)
from policies.vocabulary import ExceptionState, RequestStatus
from server.db import utcnow
from server.models import Agent, AppException, ExceptionRequest
from server.store import audit

# How long a decision is repeated to the agent: it tells the person once, after a check-in,
# even one that comes days later (a laptop in a drawer).
ANSWERS_KEPT = dt.timedelta(days=30)


class NoSuchException(LookupError):
    pass


class NoSuchRequest(LookupError):
    pass


class AlreadyDecided(Exception):
    """The request was approved or denied before; its status says which."""


@dataclass(frozen=True)
class Scope:
    agent_id: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if (self.agent_id is None) == (self.group is None):
            raise ValueError("an exception is for one agent or one group")


def state_of(row: AppException, now: dt.datetime) -> ExceptionState:
    if row.revoked_at is not None:
        return "revoked"
    return "active" if row.until > now else "expired"


def grant(session: Session, app: str, scope: Scope, until: dt.datetime, reason: str,
          actor: str, now: dt.datetime | None = None) -> tuple[AppException, bool]:
    """The exception in force for `app` and `scope`, extended to `until`, or a new one;
    True when an existing one was extended (merged)."""
    now = now or utcnow()
    current = session.scalars(
        sa.select(AppException).where(
            AppException.app == app, AppException.revoked_at.is_(None),
            AppException.until > now, _scope_is(scope))
        .order_by(AppException.until.desc()).limit(1).with_for_update()).first()
    if current is not None:
        before = as_dict(current, now)
        current.until = max(current.until, until)
        current.reason = reason if reason == current.reason else f"{current.reason}; {reason}"
        session.flush()
        audit.record(session, actor, "exception.extend", f"exception:{current.id}",
                     before=before, after=as_dict(current, now))
        return current, True
    row = AppException(app=app, agent_id=scope.agent_id, group=scope.group, until=until,
                       reason=reason, created_by=actor, created_at=now)
    session.add(row)
    session.flush()
    audit.record(session, actor, "exception.grant", f"exception:{row.id}",
                 after=as_dict(row, now))
    return row, False


def _scope_is(scope: Scope) -> sa.ColumnElement[bool]:
    if scope.agent_id is not None:
        return AppException.agent_id == scope.agent_id
    return AppException.group == scope.group


def get(session: Session, exception_id: int) -> AppException | None:
    return session.get(AppException, exception_id)


def revoke(session: Session, exception_id: int, actor: str,
           now: dt.datetime | None = None) -> AppException:
    """End an exception now; revoking one already revoked changes nothing."""
    now = now or utcnow()
    row = session.get(AppException, exception_id, with_for_update=True)
    if row is None:
        raise NoSuchException(exception_id)
    if row.revoked_at is None:
        before = as_dict(row, now)
        row.revoked_at, row.revoked_by = now, actor
        session.flush()
        audit.record(session, actor, "exception.revoke", f"exception:{row.id}",
                     before=before, after=as_dict(row, now))
    return row


def list_exceptions(session: Session, *, state: ExceptionState | None = None,
                    app: str | None = None, agent_id: str | None = None,
                    group: str | None = None, limit: int = 100,
                    now: dt.datetime | None = None) -> list[tuple[AppException, str | None]]:
    """Newest first, with the agent's hostname for machine-scoped ones."""
    now = now or utcnow()
    query = (sa.select(AppException, Agent.hostname)
             .outerjoin(Agent, Agent.id == AppException.agent_id)
             .order_by(AppException.id.desc()).limit(limit))
    if state == "active":
        query = query.where(AppException.revoked_at.is_(None), AppException.until > now)
    elif state == "expired":
        query = query.where(AppException.revoked_at.is_(None), AppException.until <= now)
    elif state == "revoked":
        query = query.where(AppException.revoked_at.is_not(None))
    for column, wanted in ((AppException.app, app), (AppException.agent_id, agent_id),
                           (AppException.group, group)):
        if wanted is not None:
            query = query.where(column == wanted)
    return [(row, hostname) for row, hostname in session.execute(query)]


def in_force_for(session: Session, agent_id: str, group: str | None,
                 now: dt.datetime) -> list[AppException]:
    # One indexed probe per scope, (agent_id, until) and (group, until): an OR of the two
    # would let the planner scan the table, at every check-in of every agent.
    live = (AppException.revoked_at.is_(None), AppException.until > now)
    scopes = [AppException.agent_id == agent_id]
    if group is not None:
        scopes.append(AppException.group == group)
    found = {row.id: row for scope in scopes
             for row in session.scalars(sa.select(AppException).where(scope, *live))}
    return [found[key] for key in sorted(found)]


def document_for(session: Session, agent: Agent, now: dt.datetime) -> ExceptionsDocument:
    """What agent `agent` may run, and the recent answers to its requests."""
    # Only decided requests have `decided_at`; no test of `status`, which would tempt the
    # planner into the (status, id) index and a scan of every request at every check-in.
    answered = session.scalars(
        sa.select(ExceptionRequest).where(
            ExceptionRequest.agent_id == agent.id,
            ExceptionRequest.decided_at > now - ANSWERS_KEPT)
        .order_by(ExceptionRequest.id))
    granted = {row.id: row for row in in_force_for(session, agent.id, agent.group, now)}
    answers = []
    for request in answered:
        exception = granted.get(request.exception_id) if request.exception_id else None
        answers.append(RequestAnswer(
            request_id=request.event_id, app=request.app,
            decision="approved" if request.status == "approved" else "denied",
            until=exception.until if exception else None, comment=request.comment,
            user=request.requested_by))
    return ExceptionsDocument(
        purpose=EXCEPTIONS_PURPOSE, agent_id=agent.id, issued_at=now,
        exceptions=[GrantedException(id=row.id, app=row.app, until=row.until,
                                     reason=row.reason) for row in granted.values()],
        answers=answers)


def as_dict(row: AppException, now: dt.datetime, hostname: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id, "app": row.app, "agent_id": row.agent_id, "hostname": hostname,
        "group": row.group, "until": row.until.isoformat(), "reason": row.reason,
        "state": state_of(row, now), "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "revoked_by": row.revoked_by,
    }


# -- requests from machines ----------------------------------------------------------


def record_request(session: Session, agent_id: str, event_id: str, info: ExceptionRequestInfo,
                   time: dt.datetime) -> ExceptionRequest:
    """Called once per new event (events.ingest inserts each event id once)."""
    row = ExceptionRequest(event_id=event_id, agent_id=agent_id, app=info.app, days=info.days,
                           reason=info.reason, requested_by=info.user or "?",
                           requested_uid=info.uid, requested_at=time, status="pending",
                           comment="")
    session.add(row)
    session.flush()
    audit.record(session, f"agent:{agent_id}", "exception_request.create",
                 f"exception_request:{row.id}", after=request_dict(row))
    return row


def get_request(session: Session, request_id: int) -> tuple[ExceptionRequest, str] | None:
    found = session.execute(
        sa.select(ExceptionRequest, Agent.hostname)
        .join(Agent, Agent.id == ExceptionRequest.agent_id)
        .where(ExceptionRequest.id == request_id)).first()
    return (found[0], found[1]) if found else None


def list_requests(session: Session, status: RequestStatus | None = None,
                  limit: int = 100) -> list[tuple[ExceptionRequest, str]]:
    """Pending first by age (oldest waited longest); decided ones newest first."""
    query = (sa.select(ExceptionRequest, Agent.hostname)
             .join(Agent, Agent.id == ExceptionRequest.agent_id).limit(limit))
    if status is not None:
        query = query.where(ExceptionRequest.status == status)
    order = ExceptionRequest.id if status == "pending" else ExceptionRequest.id.desc()
    return [(row, hostname) for row, hostname in session.execute(query.order_by(order))]


def approve(session: Session, request_id: int, until: dt.datetime, actor: str,
            comment: str = "", now: dt.datetime | None = None) -> ExceptionRequest:
    """Grant the asked-for app on the asking machine until `until` (merged like any grant)."""
    now = now or utcnow()
    row = _pending(session, request_id)
    reason = f"requested by {row.requested_by}: {row.reason}"
    exception, _ = grant(session, row.app, Scope(agent_id=row.agent_id), until, reason, actor,
                         now)
    before = request_dict(row)
    row.status, row.decided_by, row.decided_at = "approved", actor, now
    row.comment, row.exception_id = comment, exception.id
    session.flush()
    audit.record(session, actor, "exception_request.approve", f"exception_request:{row.id}",
                 before=before, after=request_dict(row))
    return row


def deny(session: Session, request_id: int, actor: str, comment: str = "",
         now: dt.datetime | None = None) -> ExceptionRequest:
    now = now or utcnow()
    row = _pending(session, request_id)
    before = request_dict(row)
    row.status, row.decided_by, row.decided_at, row.comment = "denied", actor, now, comment
    session.flush()
    audit.record(session, actor, "exception_request.deny", f"exception_request:{row.id}",
                 before=before, after=request_dict(row))
    return row


def _pending(session: Session, request_id: int) -> ExceptionRequest:
    row = session.get(ExceptionRequest, request_id, with_for_update=True)
    if row is None:
        raise NoSuchRequest(request_id)
    if row.status != "pending":
        raise AlreadyDecided(row.status)
    return row


def request_dict(row: ExceptionRequest, hostname: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id, "agent_id": row.agent_id, "hostname": hostname, "app": row.app,
        "days": row.days, "reason": row.reason, "requested_by": row.requested_by,
        "requested_uid": row.requested_uid, "requested_at": row.requested_at.isoformat(),
        "status": row.status, "decided_by": row.decided_by,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "comment": row.comment, "exception_id": row.exception_id,
    }
