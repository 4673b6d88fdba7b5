"""Who is using the dashboard: signed session cookies, CSRF tokens, role checks.

A session is a cookie the server signed (HMAC-SHA256): which user or API token
logged in, a random session id, when it started and when it was last used.
Nothing is stored server-side, so any server process sharing the data
directory accepts it. The signing key is derived from the policy-signing key,
which every server process must already share; deriving (HKDF, its own label)
keeps the two uses apart, and rotating that key logs everyone out.

Every request re-reads the user (or token) row, so disabling a user, revoking
a token or changing a role takes effect at once, and a changed password ends
the sessions opened with the old one (the cookie carries a fingerprint of the
password hash). Logging out deletes the cookie and bars its session id, in
the database, until the session would have expired anyway: every server
process sharing the database refuses it from then on.

CSRF: every form carries a token derived from the session id (session-bound),
checked on every POST together with the Origin header when the browser sends
one. The login form, used before there is a session, gets a double-submit
token bound to a random pre-login cookie.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from server.api.deps import audit_refused_policy_change
from server.dashboard.sessions import (
    ABSOLUTE_SECONDS,
    IDLE_SECONDS,
    LOGIN_COOKIE,
    RENEW_AFTER_SECONDS,
    SESSION_COOKIE,
    Person,
    Session,
    SessionKeeper,
    password_fingerprint,
    token_actor,
    user_actor,
)
from server.dashboard.web import DashboardDep, LoginRequired, PageError
from server.models import ROLES, ApiToken, User

__all__ = ["ABSOLUTE_SECONDS", "IDLE_SECONDS", "LOGIN_COOKIE", "RENEW_AFTER_SECONDS",
           "SESSION_COOKIE", "Person", "Session", "SessionKeeper", "password_fingerprint",
           "token_actor", "user_actor"]


# -- dependencies -----------------------------------------------------------------------------


def current_person(request: Request, keeper: SessionKeeper) -> Person | None:
    """The person behind the request's session cookie, if it is still good."""
    session = keeper.decode(request.cookies.get(SESSION_COOKIE))
    return None if session is None else _resolve(request, session)


def signed_in(request: Request, dashboard: DashboardDep) -> Person:
    """The person behind the session cookie; redirects to the login page otherwise."""
    person = current_person(request, dashboard.sessions)
    if person is None:
        raise LoginRequired()
    request.state.person = person
    renewed = dashboard.sessions.renewed(person.session)
    if renewed is not None:
        request.state.renewed_session = renewed
    return person


def _resolve(request: Request, session: Session) -> Person | None:
    context = request.app.state.context
    with context.read_sessions() as db:
        if session.kind == "user":
            user = db.get(User, session.ref)
            if (user is None or user.disabled
                    or password_fingerprint(user.password_hash) != session.credential):
                return None
            return Person(actor=user_actor(user), name=user.username, role=user.role,
                          session=session)
        if session.kind == "token":
            row = db.get(ApiToken, session.ref)
            if row is None or row.revoked_at is not None:
                return None
            if row.user_id is not None:
                owner = db.get(User, row.user_id)
                if owner is None or owner.disabled:
                    return None
            return Person(actor=token_actor(row), name=row.name, role=row.role,
                          session=session)
    return None


SignedIn = Annotated[Person, Depends(signed_in)]


def role(required: str) -> Callable[[Person], Person]:
    """A dependency: the signed-in person, if their role includes `required`; else 403."""
    if required not in ROLES:
        raise ValueError(f"unknown role {required!r}")

    def check(person: SignedIn) -> Person:
        return _with_role(person, required)

    return check


def posted_by(required: str) -> Callable[..., Any]:
    """A dependency for POST routes: the role check, then the Origin and CSRF checks."""
    if required not in ROLES:
        raise ValueError(f"unknown role {required!r}")

    # Annotations here name module-level things only: they are evaluated as strings.
    async def check(request: Request, dashboard: DashboardDep, person: SignedIn) -> Person:
        if not person.has_role(required):
            await run_in_threadpool(audit_refused_policy_change, request.app.state.context,
                                    person.actor, request, person.role, required)
        _with_role(person, required)
        if not same_origin(request):
            raise PageError(403, "This form was sent from another site, so it was refused.")
        form = await request.form()
        token = form.get("csrf_token")
        if not isinstance(token, str) or not dashboard.sessions.csrf_ok(person, token):
            raise PageError(403, "This form has expired or did not come from this dashboard. "
                                 "Go back, reload the page and try again.")
        return person

    return check


def _with_role(person: Person, required: str) -> Person:
    if not person.has_role(required):
        raise PageError(403, f"This needs the {required} role; you are signed in as "
                             f"{person.role}.")
    return person


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # older browsers and non-browser clients; the CSRF token still applies
    return origin == f"{request.url.scheme}://{request.url.netloc}"


Viewer = Annotated[Person, Depends(role("viewer"))]
Analyst = Annotated[Person, Depends(role("analyst"))]
Admin = Annotated[Person, Depends(role("admin"))]
AnalystPost = Annotated[Person, Depends(posted_by("analyst"))]
AdminPost = Annotated[Person, Depends(posted_by("admin"))]
ViewerPost = Annotated[Person, Depends(posted_by("viewer"))]
