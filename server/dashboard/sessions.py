"""Dashboard sessions: the signed cookie, who it names, and the CSRF tokens tied to it.

See server.dashboard.auth for how requests use them.
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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Request, Response
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from server.models import ROLES, ApiToken, User
from server.store import revoked_sessions

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


class LoggedOut:
    """Session ids logged out before they expired, in the database: a logout at one
    server process is refused at every other."""

    def __init__(self, read_sessions: sessionmaker[DbSession],
                 write_sessions: sessionmaker[DbSession]) -> None:
        self._read = read_sessions
        self._write = write_sessions

    def contains(self, sid: str) -> bool:
        with self._read() as db:
            return revoked_sessions.is_revoked(db, sid)

    def add(self, sid: str, expires_at: float, now: float) -> None:
        with self._write() as db:
            # Rows of sessions that expired anyway go in the same transaction: logouts are
            # rare, so the table stays as small as the sessions still alive.
            revoked_sessions.prune(db, now)
            revoked_sessions.revoke(db, sid, expires_at)
            db.commit()


class SessionKeeper:
    def __init__(self, key: bytes, logged_out: LoggedOut,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock
        self._logged_out = logged_out

    @classmethod
    def from_signing_key(cls, key_path: Path, logged_out: LoggedOut) -> SessionKeeper:
        material = key_path.read_bytes()
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"warden dashboard session cookies v1").derive(material)
        return cls(key, logged_out)

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
        if self._logged_out.contains(session.sid):
            return None
        return session

    def renewed(self, session: Session) -> Session | None:
        """The session with a fresh "last used" time, when it is worth a new cookie."""
        now = int(self._clock())
        return replace(session, seen=now) if now - session.seen >= RENEW_AFTER_SECONDS else None

    def log_out(self, session: Session) -> None:
        self._logged_out.add(session.sid, session.started + ABSOLUTE_SECONDS, self._clock())

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


