"""The agent door: `/api/v1/agent/` — enroll, check in, fetch the policy, post events.

Each route authenticates the agent from its token (never from anything in the
path or body), so an agent can only ever read or write as itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from policies.exceptions import SignedExceptions
from policies.wire import (
    AgentEvent,
    CheckinRequest,
    CheckinResponse,
    EnrollRequest,
    EnrollResponse,
    EventBatch,
    EventsResponse,
    KeyRotation,
)
from server.api.bodies import openapi_json_body
from server.api.deps import (
    ContextDep,
    EnrollSecretDep,
    ServerContext,
    SessionDep,
    TokenDep,
    client_address,
    current_agent,
    read_json,
    unauthorized,
)
from server.api.errors import ApiError, validation_details
from server.api.findings_stream import stream_items
from server.crypto import enrollment_proof
from server.db import utcnow
from server.models import Agent, Finding
from server.schemas.errors import error_responses
from server.store import agents, events, exceptions, findings, policies, reenrollments

log = logging.getLogger(__name__)

# Every agent route: a malformed or oversized request, an unknown or revoked token, a body
# in another encoding, an invalid body, the database busy.
router = APIRouter(prefix="/api/v1/agent", tags=["agent"],
                   responses=error_responses(400, 401, 413, 415, 422, 503))

# Retries of one batch after a lost race (unique key, deadlock); the events are idempotent.
_INGEST_ATTEMPTS = 3
# SQLSTATEs PostgreSQL uses for "your transaction lost a race, run it again".
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


@router.post("/enroll", status_code=201, response_model=EnrollResponse,
             responses=error_responses(403, 409, 429))
def enroll(
    secret: EnrollSecretDep, body: EnrollRequest, session: SessionDep, context: ContextDep,
    request: Request,
) -> EnrollResponse:
    facts = agents.HostFacts(**body.host_facts())
    proof = None
    if (body.public_key is None) != (body.proof is None):
        # A key without its proof (or a proof without its key) proves nothing.
        raise ApiError(403, "public_key and proof go together: send both or neither",
                       code="invalid_proof")
    if body.public_key is not None and body.proof is not None:
        try:
            proof = enrollment_proof.verify(body.machine_id, body.public_key,
                                            body.proof.signed_at, body.proof.signature)
        except enrollment_proof.InvalidProof as exc:
            # Well-formed but not proven: refused like a wrong credential, not as bad syntax.
            raise ApiError(403, str(exc), code="invalid_proof") from exc
    try:
        agent, token = agents.enroll(session, facts, secret, proof, client_address(request))
    except agents.AgentRevokedError as exc:
        raise ApiError(403, "this machine's agent was revoked by an administrator; ask them "
                       "to re-admit it", code="agent_revoked") from exc
    except reenrollments.ReenrollmentPending as exc:
        session.commit()  # the held request is what an administrator decides on
        log.warning("enrollment of known machine %s held for approval: %s", exc.agent_id,
                    exc.reason)
        raise ApiError(409, str(exc), code="reenrollment_pending",
                       details=[{"agent_id": exc.agent_id}]) from exc
    session.commit()
    return EnrollResponse(agent_id=agent.id, agent_token=token,
                          policy_public_key=context.signer.public_key_b64, group=agent.group,
                          key_rotations=[KeyRotation.model_validate(item)
                                         for item in policies.key_rotations(session)])


# Check-in and policy poll are the server's hot path: every agent calls both every minute
# (20,000 agents: 333 check-ins/s and as many polls). Each costs one worker-thread hop and
# one SQL statement that authenticates the token and reads the active policy version
# together; see server.store.agents. The policy version is read, not cached, so a new
# activation reaches agents on their next call, whichever server process answers it.


@router.post("/checkin", response_model=CheckinResponse,
             openapi_extra=openapi_json_body(CheckinRequest))
async def checkin(request: Request, token: TokenDep, context: ContextDep) -> CheckinResponse:
    body = await _checkin_body(request, context, token)
    checked_in = await run_in_threadpool(_record_checkin, context, token, body)
    if checked_in is None:
        raise unauthorized("unknown or revoked agent token; enroll again")
    if checked_in.new_sensor_problems and context.hooks.on_sensor_problem:
        await run_in_threadpool(_alert_sensor_problems, context, checked_in)
    signed = await run_in_threadpool(_signed_exceptions, context, checked_in.agent_id)
    return CheckinResponse(policy_etag=checked_in.policy_etag,
                           policy_number=checked_in.policy_number,
                           policy_public_key=context.signer.public_key_b64,
                           next_checkin_seconds=next_checkin_seconds(context),
                           exceptions=signed)


def _signed_exceptions(context: ServerContext, agent_id: str) -> SignedExceptions | None:
    """This agent's exceptions and answers, signed with the policy key: beside the policy,
    not in it, so a grant reaches the agent without a new policy version."""
    with context.read_sessions() as session:
        agent = agents.get(session, agent_id)
        if agent is None:
            return None
        document = exceptions.document_for(session, agent, utcnow()).model_dump(mode="json")
    return SignedExceptions(document=document, signature=context.signer.sign(document))


async def _checkin_body(request: Request, context: ServerContext, token: str) -> CheckinRequest:
    # Read by hand, not as a FastAPI body parameter: FastAPI would refuse a bad body before
    # the handler runs, but a caller must prove who it is (401) before learning anything
    # about its body — and the token is only checked by the statement that records it.
    try:
        return CheckinRequest.model_validate(
            await read_json(request, context, allow_gzip=False))
    except (ApiError, ValidationError) as exc:
        await run_in_threadpool(current_agent, context, token)  # 401 for a stranger
        if isinstance(exc, ValidationError):
            # The same 422 as FastAPI's own body validation: fields under `body.`.
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from exc
        raise


def _record_checkin(
    context: ServerContext, token: str, body: CheckinRequest
) -> agents.CheckedIn | None:
    with context.write_engine.begin() as connection:
        return agents.checkin(connection, token, body.policy_version,
                              body.status.model_dump(mode="json", exclude_none=True),
                              public_key=body.public_key)


def _alert_sensor_problems(context: ServerContext, checked_in: agents.CheckedIn) -> None:
    """After the commit: one alert per sensor that has just turned stalled or error."""
    with context.read_sessions() as session:
        owner = agents.get(session, checked_in.agent_id)
        host = owner.hostname if owner else None
    hooks = context.hooks
    for sensor, report in sorted(checked_in.new_sensor_problems.items()):
        hooks.fire(hooks.on_sensor_problem, {
            "kind": "sensor", "id": f"{checked_in.agent_id}/{sensor}/{report.get('state')}",
            "agent_id": checked_in.agent_id, "host": host, "sensor": sensor,
            "state": report.get("state"), "detail": report.get("detail", ""),
            "last_ok": report.get("last_ok")})


def next_checkin_seconds(context: ServerContext) -> int:
    settings = context.settings
    spread = settings.checkin_jitter_fraction
    factor = 1 + context.rng.uniform(-spread, spread)
    return max(1, round(settings.checkin_interval_seconds * factor))


@router.get(
    "/policy",
    responses={200: {"description": "the signed bundle and its signed activation: "
                          "{\"bundle\", \"signature\", \"activation\", "
                          "\"activation_signature\"}, and once the signing key was "
                          "rotated \"key_rotations\""},
               304: {"description": "the agent's copy (If-None-Match) is current"},
               **error_responses(404)},
)
def get_policy(
    token: TokenDep, context: ContextDep,
    if_none_match: Annotated[str | None, Header(
        description="the ETag of the agent's copy: 304 while it is current")] = None,
) -> Response:
    # A plain `def` with only async dependencies: one hop, in which the whole poll runs.
    with context.engine.connect() as connection:
        found = agents.policy_for(connection, token)
        if found is None:
            raise unauthorized("unknown or revoked agent token; enroll again")
        active = found.active
        if active is None:
            raise ApiError(404, "no policy is active yet", code="no_policy")
        if etag_matches(if_none_match, active.version):
            return Response(status_code=304, headers=_policy_headers(active.version))
        # Bundle and activation in one statement, under the ETag of what is sent: a policy
        # activated since the first statement is sent whole. Nothing ever deactivates one.
        signed = policies.signed_active_json(connection)
        assert signed is not None
        return Response(signed.body, media_type="application/json",
                        headers=_policy_headers(signed.version))


def _policy_headers(version: str) -> dict[str, str]:
    return {"ETag": f'"{version}"', "Cache-Control": "no-cache"}


def etag_matches(if_none_match: str | None, version: str) -> bool:
    """RFC 9110 If-None-Match: a list of (possibly weak) tags, or `*`."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == version:
            return True
    return False


async def event_batch(request: Request, context: ServerContext) -> list[events.IncomingEvent]:
    """The body of POST events: gzip-aware, at most `max_events_per_batch`, each validated."""
    data = await read_json(request, context, allow_gzip=True)
    limit = context.settings.max_events_per_batch
    # Count before validating: do not spend time checking a million events to refuse them.
    if isinstance(data, dict) and isinstance(data.get("events"), list) \
            and len(data["events"]) > limit:
        raise ApiError(413, f"a batch holds at most {limit} events; got {len(data['events'])}",
                       code="too_many_events", details=[{"limit_events": limit}])
    try:
        batch = EventBatch.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "the event batch is not valid; nothing was stored",
                       code="validation_error",
                       details=validation_details(exc.errors())) from exc
    now = utcnow()
    # Serialised once for the whole batch: one call instead of two per event.
    payloads = batch.model_dump(mode="json")["events"]
    return [_incoming(event, payload, now)
            for event, payload in zip(batch.events, payloads, strict=True)]


def _incoming(event: AgentEvent, payload: dict[str, Any], now: dt.datetime) -> events.IncomingEvent:
    # A machine with its clock in the future must not pin a finding "seen" past today.
    time = min(event.time.astimezone(dt.UTC), now)
    if event.request is None:
        del payload["request"]  # stored as sent: only an exception request carries one
    return events.IncomingEvent(id=str(event.id), type=event.type, time=time,
                                finding=dict(payload["finding"]) if event.finding else {},
                                payload=payload, request=event.request)


@router.post("/events", response_model=EventsResponse,
             openapi_extra=openapi_json_body(EventBatch))
async def post_events(request: Request, token: TokenDep, context: ContextDep) -> EventsResponse:
    # One worker-thread hop for the whole batch, as for a check-in: the token is checked by
    # the transaction that stores the events (a revoked agent's batch is never stored).
    batch = await _events_body(request, context, token)
    return await run_in_threadpool(_store_events, context, token, batch)


async def _events_body(
    request: Request, context: ServerContext, token: str
) -> list[events.IncomingEvent]:
    try:
        return await event_batch(request, context)
    except ApiError:
        # A caller proves who it is (401) before learning anything about its body.
        await run_in_threadpool(current_agent, context, token)
        raise


def _store_events(
    context: ServerContext, token: str, batch: list[events.IncomingEvent]
) -> EventsResponse:
    hooks = context.hooks
    with context.write_sessions() as session:
        # Alerts and the SIEM stream show findings as the API does: only they need ORM rows.
        result, owner = _ingest_committed(
            session, token, batch, load_rows=bool(hooks.on_deny_opened or hooks.on_findings_stream))
        # Only now, with the batch durable, tell anyone: alerts, metrics — and the agent.
        by_type = Counter(event.type for event in result.accepted_events)
        hooks.fire(hooks.on_events_ingested, dict(by_type), len(result.duplicates))
        if hooks.on_deny_opened:
            for row in result.opened:
                if row.verdict == "deny" and row.id is not None:
                    hooks.fire(hooks.on_deny_opened,
                               _alert_view(context, result.rows[row.id], owner))
        if hooks.on_findings_stream and (result.opened or result.resolved or any(
                event.type == "action" for event in result.accepted_events)):
            items = stream_items(session, owner, result,
                                 lambda row, owner: _alert_view(context, row, owner))
            hooks.fire(hooks.on_findings_stream, items)
    return EventsResponse(accepted=result.accepted, duplicates=result.duplicates)


def _alert_view(context: ServerContext, row: Finding, owner: Agent | None) -> dict[str, Any]:
    """The finding as the API shows it, plus display names for people reading alerts."""
    view = findings.as_dict(row, owner)
    for field, app_id in (("app_name", row.app), ("alternative_name", row.alternative)):
        app = context.catalog.get(app_id) if app_id else None
        view[field] = app.name if app else app_id
    return view


def _ingest_committed(
    session: Session, token: str, batch: list[events.IncomingEvent], *, load_rows: bool
) -> tuple[events.IngestResult, Agent | None]:
    """The batch stored and committed, and (with `load_rows`) the agent that sent it."""
    for attempt in range(1, _INGEST_ATTEMPTS + 1):
        try:
            agent_id = agents.live_agent_id(session, token)
            if agent_id is None:
                raise unauthorized("unknown or revoked agent token; enroll again")
            result = events.ingest(session, agent_id, batch, load_rows=load_rows)
            owner = session.get(Agent, agent_id) if load_rows else None
            session.commit()
            return result, owner
        except sa.exc.DBAPIError as exc:
            session.rollback()
            if attempt == _INGEST_ATTEMPTS or not _retryable(exc):
                raise
            log.info("retrying event batch after %s (attempt %d)", type(exc.orig).__name__,
                     attempt)
    raise AssertionError("unreachable")


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    # Two batches creating the same finding at once: one loses the unique key; rerun it.
    if isinstance(exc, sa.exc.IntegrityError):
        return True
    sqlstate: Any = getattr(exc.orig, "sqlstate", None)
    return sqlstate in _RETRYABLE_SQLSTATES
