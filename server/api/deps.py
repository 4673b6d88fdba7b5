"""What every route shares: the server context, a database session, and who is asking.

Two doors, one piece of auth code. Agents present an agent token (`wag_…`)
and can only act for their own agent; people and scripts present an API
token (`wat_…`) that carries a role. Each door rejects the other's tokens.
Write `Annotated[..., Depends(...)]` aliases below into a route's signature;
list the caller's dependency first so a bad token is refused (401) before
the body is even parsed.

The caller is looked up in a short session of its own, not the request's:
a write route's session then starts its transaction inside the handler, so on
SQLite the write lock is held for the handler's statements only, not across
body parsing and thread hops. The Agent or Principal handed to the route is
therefore detached: read its fields; to change the row, load it (or UPDATE
by id) in the request's session.

FastAPI runs every plain `def` dependency and route in a worker thread, and a
hop there and back costs about 0.2 ms of CPU under load — more than a simple
query. Dependencies that do no I/O are therefore `async def`: they run on the
event loop for free. The agent API's check-in and policy poll skip the
session dependencies altogether and do their work in one hop (server.api.agent).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from policies.catalog_model import AppDefinition
from server.api.bodies import decode_json
from server.api.errors import ApiError
from server.crypto.signing import PolicySigner
from server.db import utcnow
from server.models import ROLES, Agent, ApiToken, EnrollSecret
from server.settings import ServerSettings
from server.store import agents, audit, enroll_secrets, tokens
from server.store.known_apps import KnownApps
from server.throttling import EnrollThrottle

log = logging.getLogger(__name__)

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Hooks:
    """Callbacks other parts register (alerts, metrics). Run after commit; must not block."""

    # A deny finding was opened or reopened; gets `findings.as_dict(row, agent)`.
    on_deny_opened: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    # An agent's check-in reports a sensor newly `stalled` or `error`; gets
    # {"kind": "sensor", "id", "agent_id", "host", "sensor", "state", "detail", "last_ok"}.
    on_sensor_problem: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    # A batch was stored: what it changed, as server.api.findings_stream describes.
    on_findings_stream: list[Callable[[list[dict[str, Any]]], None]] = field(
        default_factory=list)
    # A batch was stored: (accepted events by type, number of duplicates).
    on_events_ingested: list[Callable[[dict[str, int], int], None]] = field(
        default_factory=list)
    # Run by the app's lifespan, in order; shutdown in reverse.
    on_startup: list[Callable[[], None]] = field(default_factory=list)
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)

    def fire(self, callbacks: list[Callable[..., None]], *args: Any) -> None:
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:
                # The data is committed; a broken listener must not turn that into an error.
                log.exception("hook %r failed", callback)


@dataclass
class ServerContext:
    """Everything a request needs, built once by create_app and kept on app.state."""

    settings: ServerSettings
    engine: Engine
    read_sessions: sessionmaker[Session]
    # Sessions that will write: on SQLite they take the write lock up front.
    write_sessions: sessionmaker[Session]
    # The same for Core statements without a session (`write_engine.begin()`).
    write_engine: Engine
    signer: PolicySigner
    catalog: dict[str, AppDefinition]
    # The app ids counted by name in metrics and stats; others count as `other`.
    known_apps: KnownApps
    # Failed enrollments by client address (settings.enroll_failures_per_address).
    enroll_throttle: EnrollThrottle
    hooks: Hooks = field(default_factory=Hooks)
    rng: random.Random = field(default_factory=random.Random)


async def get_context(request: Request) -> ServerContext:
    context: ServerContext = request.app.state.context
    return context


ContextDep = Annotated[ServerContext, Depends(get_context)]


def get_session(request: Request, context: ContextDep) -> Iterator[Session]:
    """One session per request; GETs read in a plain transaction, other methods write.

    The transaction starts at the session's first statement; keep the request's
    session out of dependencies so that happens in the handler (see above).
    """
    factory = context.read_sessions if request.method in _READ_METHODS else context.write_sessions
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# Declared as a security scheme so /openapi.json says which routes want a token; the
# token's kind (agent token, API token, enrollment secret) is each route's to check.
_BEARER = HTTPBearer(auto_error=False, description="an API token (`wat_…`) for the admin "
                     "API, an agent token (`wag_…`) or, to enroll, an enrollment secret")


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> str:
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise unauthorized("send the token as `Authorization: Bearer <token>`")
    return token


TokenDep = Annotated[str, Depends(bearer_token)]


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def client_address(request: Request) -> str:
    """The caller's address; behind a proxy listed in settings.trusted_proxies, the client
    it named in X-Forwarded-For (server.app installs the middleware), else the peer's own."""
    return request.client.host if request.client else "unknown"


# -- the agent door ------------------------------------------------------------


def current_agent(context: ContextDep, token: TokenDep) -> Agent:
    with context.read_sessions() as session:
        agent = agents.authenticate(session, token)
    if agent is None:
        raise unauthorized("unknown or revoked agent token; enroll again")
    return agent


def enroll_secret(request: Request, context: ContextDep, token: TokenDep) -> EnrollSecret:
    # Failures are limited per address, and checked before the secret is looked up: past
    # the limit even the right secret is refused, or the limit would not slow guessing.
    address = client_address(request)
    throttle = context.enroll_throttle
    # Counted as failed before the lookup, in the same transaction that checks the limit
    # (on every server process's shared rows): concurrent guesses cannot pass the limit.
    wait = throttle.attempt(address)
    if wait > 0:
        seconds = math.ceil(wait)
        raise ApiError(429, f"too many failed enrollments from {address}; retry in "
                       f"{seconds} s", headers={"Retry-After": str(seconds)})
    # A short read session of its own, as for agent tokens: looked up in the request's
    # write session, the SQLite write lock would be held from before the handler's thread
    # hop, and a mass roll-out (dozens of machines enrolling at once) would starve the
    # thread pool. enroll() counts the use by id in its own transaction.
    with context.read_sessions() as session:
        secret = enroll_secrets.find_usable(session, token)
    if secret is None:
        log.warning("enrollment with an unknown or revoked secret from %s", address)
        raise unauthorized("unknown or revoked enrollment secret")
    throttle.succeeded(address)
    return secret


EnrollSecretDep = Annotated[EnrollSecret, Depends(enroll_secret)]


# -- the people door -----------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """A person or script acting through an API token."""

    actor: str  # what the audit log records as "who"
    role: str
    token_id: int | None = None
    user_id: int | None = None

    def has_role(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def current_principal(context: ContextDep, token: TokenDep) -> Principal:
    with context.read_sessions() as session:
        row = tokens.authenticate(session, token)
    if row is None:
        raise unauthorized("unknown or revoked API token")
    now = utcnow()
    if tokens.needs_touch(row, now):
        _touch(context, row, now)
    return Principal(actor=_actor(row), role=row.role, token_id=row.id, user_id=row.user_id)


def _touch(context: ServerContext, row: ApiToken, now: dt.datetime) -> None:
    # Its own short write transaction: even a GET records when the token was last used.
    with context.write_sessions() as session:
        tokens.touch(session, row.id, now)
        session.commit()


def _actor(row: ApiToken) -> str:
    return f"token:{row.id}:{row.name}"


def require_role(role: str) -> Callable[..., Awaitable[Principal]]:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    async def check(request: Request,
                    principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has_role(role):
            await run_in_threadpool(audit_refused_policy_change, request.app.state.context,
                                    principal.actor, request, principal.role, role)
            raise ApiError(403, f"this needs the {role} role; the token has {principal.role}")
        return principal

    return check


# Where policies change, on both doors: a refused attempt there is worth an audit entry.
_POLICY_PATHS = ("/api/v1/policies", "/policies")


def audit_refused_policy_change(context: ServerContext, actor: str, request: Request,
                                held: str, needed: str) -> None:
    """Record a refused (403) attempt to change policies: who, what, and which role it took.

    Only changes (not reads), and only policies: the audit log says who tried to change
    what agents enforce, without filling up with every refused page view.
    """
    path = request.url.path
    if request.method in ("GET", "HEAD", "OPTIONS") or not any(
            path == prefix or path.startswith(prefix + "/") for prefix in _POLICY_PATHS):
        return
    with context.write_sessions() as session:
        audit.record(session, actor, "policy.refused", path,
                     after={"method": request.method, "role": held, "needed": needed})
        session.commit()


ViewerDep = Annotated[Principal, Depends(require_role("viewer"))]
AnalystDep = Annotated[Principal, Depends(require_role("analyst"))]
AdminDep = Annotated[Principal, Depends(require_role("admin"))]


# -- bodies read by hand (gzip, large batches) ---------------------------------


async def read_json(request: Request, context: ServerContext, *, allow_gzip: bool) -> Any:
    """The request's JSON, for routes that parse their body themselves (gzip, big batches)."""
    return decode_json(await request.body(), content_type=request.headers.get("content-type"),
                       content_encoding=request.headers.get("content-encoding"),
                       allow_gzip=allow_gzip, max_bytes=context.settings.max_body_bytes)
