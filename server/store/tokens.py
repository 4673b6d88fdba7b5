"""API tokens for people and scripts: a role each (viewer, analyst, admin)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.crypto import hashing
from server.db import utcnow
from server.models import ROLES, ApiToken, User
from server.store import audit

# Recording every use would turn each read into a write; once a minute is plenty.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


def create(
    session: Session, *, name: str, role: str, actor: str, user_id: int | None = None
) -> tuple[ApiToken, str]:
    """A new token: the row, and the token in clear (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    token = hashing.new_token(hashing.API_TOKEN_PREFIX)
    row = ApiToken(name=name, token_hash=hashing.hash_token(token), role=role,
                   user_id=user_id, created_at=utcnow())
    session.add(row)
    session.flush()
    audit.record(session, actor, "token.create", f"token:{row.id}", after=as_dict(row))
    return row, token


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The live token row for `token` (not revoked, owner not disabled), or None."""
    if not token.startswith(hashing.API_TOKEN_PREFIX):
        return None
    digest = hashing.hash_token(token)
    row = session.scalars(sa.select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if not hashing.tokens_equal(row.token_hash, digest):
        return None
    if row.user_id is not None:
        user = session.get(User, row.user_id)
        if user is None or user.disabled:
            return None
    return row


def needs_touch(row: ApiToken, now: dt.datetime) -> bool:
    return row.last_used is None or now - row.last_used >= LAST_USED_RESOLUTION


def touch(session: Session, token_id: int, now: dt.datetime) -> None:
    session.execute(sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used=now))


def get(session: Session, token_id: int) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def list_all(session: Session) -> list[ApiToken]:
    return list(session.scalars(sa.select(ApiToken).order_by(ApiToken.id)))


def revoke(session: Session, token_id: int, actor: str) -> ApiToken | None:
    row = session.get(ApiToken, token_id, with_for_update=True)
    if row is None:
        return None
    before = as_dict(row)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    audit.record(session, actor, "token.revoke", f"token:{row.id}", before=before,
                 after=as_dict(row))
    return row


def as_dict(row: ApiToken) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "user_id": row.user_id,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "last_used": row.last_used.isoformat() if row.last_used else None,
    }
