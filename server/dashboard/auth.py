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
password hash). Logging out deletes the cookie and bars its session id in
this process until the session would have expired anyway.

CSRF: every form carries a token derived from the session id (session-bound),
checked on every POST together with the Origin header when the browser sends
one. The login form, used before there is a session, gets a double-submit
token bound to a random pre-login cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Depends, Request, Response

from server.dashboard.web import DashboardDep, LoginRequired, PageError
from server.models import ROLES, ApiToken, User

SESSION_COOKIE = "warden_session"
LOGIN_COOKIE = "warden_login"
IDLE_SECONDS = 60 * 60
ABSOLUTE_SECONDS = 12 * 60 * 60
# Renewing the cookie on every request would be noise; once a minute keeps the idle clock.
RENEW_AFTER_SECONDS = 60


@dataclass(frozen=True)
class Session:
    """What the cookie says. `kind` is "user" or "token"; `ref` the row id."""

    sid: str
    kind: str
    ref: int
    started: int
    seen: int
    # For users: a fingerprint of the password hash, so a new password ends old sessions.
    credential: str = ""


@dataclass(frozen=True)
class Person:
    """Someone signed in to the dashboard."""

    actor: str  # what the audit log records, like the API's token actors
    name: str
    role: str
    session: Session

    def has_role(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class SessionKeeper:
    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock
        self._logged_out: dict[str, float] = {}

    @classmethod
    def from_signing_key(cls, key_path: Path) -> SessionKeeper:
        material = key_path.read_bytes()
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"warden dashboard session cookies v1").derive(material)
        return cls(key)

    # -- sessions ---------------------------------------------------------------------------

    def new_session(self, kind: str, ref: int, credential: str = "") -> Session:
        now = int(self._clock())
        # A fresh id at every login: a session id planted before login is never reused.
        return Session(sid=secrets.token_urlsafe(16), kind=kind, ref=ref, started=now,
                       seen=now, credential=credential)

    def encode(self, session: Session) -> str:
        payload = json.dumps(asdict(session), separators=(",", ":")).encode()
        body = _b64(payload)
        return f"{body}.{_b64(self._mac(b'session|' + body.encode()))}"

    def decode(self, cookie: str | None) -> Session | None:
        """The session in a cookie, if it is ours, unexpired and not logged out."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        expected = _b64(self._mac(b"session|" + body.encode()))
        # As bytes: compare_digest refuses non-ASCII str, and a cookie may hold anything.
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        try:
            session = Session(**json.loads(_unb64(body)))
        except (ValueError, TypeError):
            return None
        now = self._clock()
        if now - session.started > ABSOLUTE_SECONDS or now - session.seen > IDLE_SECONDS:
            return None
        if session.sid in self._logged_out:
            return None
        return session

    def renewed(self, session: Session) -> Session | None:
        """The session with a fresh "last used" time, when it is worth a new cookie."""
        now = int(self._clock())
        return replace(session, seen=now) if now - session.seen >= RENEW_AFTER_SECONDS else None

    def log_out(self, session: Session) -> None:
        now = self._clock()
        self._logged_out = {sid: until for sid, until in self._logged_out.items()
                            if until > now}
        self._logged_out[session.sid] = session.started + ABSOLUTE_SECONDS

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(SESSION_COOKIE, self.encode(session), max_age=ABSOLUTE_SECONDS,
                            httponly=True, samesite="lax", secure=_https(request), path="/")

    def clear_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax",
                               secure=_https(request), path="/")

    # -- CSRF -------------------------------------------------------------------------------

    def csrf_token(self, person: Person) -> str:
        return _b64(self._mac(b"csrf|" + person.session.sid.encode()))

    def csrf_ok(self, person: Person, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.csrf_token(person).encode())

    def login_nonce(self) -> str:
        return secrets.token_urlsafe(16)

    def login_csrf_token(self, nonce: str) -> str:
        return _b64(self._mac(b"login|" + nonce.encode()))

    def login_csrf_ok(self, nonce: str | None, token: str) -> bool:
        if not nonce:
            return False
        return hmac.compare_digest(token.encode(), self.login_csrf_token(nonce).encode())

    def set_login_cookie(self, request: Request, response: Response, nonce: str) -> None:
        # Strict: it is only needed on the login page's own POST.
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True,
                            samesite="strict", secure=_https(request), path="/login")

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def user_actor(user: User) -> str:
    return f"user:{user.id}:{user.username}"


def token_actor(row: ApiToken) -> str:
    # The same spelling as the API's, so the audit log names a token one way.
    return f"token:{row.id}:{row.name}"


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
