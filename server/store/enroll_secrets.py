"""Enrollment secrets: what a new agent shows to join, optionally scoped to a group."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.actors import actor_name
from server.crypto import hashing
from server.db import utcnow
from server.models import EnrollSecret
from server.store import audit


def create(
    session: Session, *, group: str | None, actor: str, note: str | None = None
) -> tuple[EnrollSecret, str]:
    """A new secret: the row, and the secret in clear (shown once, never stored)."""
    secret = hashing.new_token(hashing.ENROLL_SECRET_PREFIX)
    row = EnrollSecret(secret_hash=hashing.hash_token(secret), group=group, created_by=actor,
                       created_at=utcnow(), uses=0, note=note)
    session.add(row)
    session.flush()
    audit.record(session, actor, "secret.create", f"secret:{row.id}", after=as_dict(row))
    return row, secret


def find_usable(session: Session, secret: str) -> EnrollSecret | None:
    """The unrevoked secret row matching `secret`, or None."""
    digest = hashing.hash_token(secret)
    row = session.scalars(
        sa.select(EnrollSecret).where(EnrollSecret.secret_hash == digest)
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row if hashing.tokens_equal(row.secret_hash, digest) else None


def get(session: Session, secret_id: int) -> EnrollSecret | None:
    return session.get(EnrollSecret, secret_id)


def list_all(session: Session) -> list[EnrollSecret]:
    return list(session.scalars(sa.select(EnrollSecret).order_by(EnrollSecret.id)))


def revoke(session: Session, secret_id: int, actor: str) -> EnrollSecret | None:
    """Revoke; None if there is no such secret. Revoking twice keeps the first time."""
    row = session.get(EnrollSecret, secret_id, with_for_update=True)
    if row is None:
        return None
    before = as_dict(row)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    audit.record(session, actor, "secret.revoke", f"secret:{row.id}", before=before,
                 after=as_dict(row))
    return row


def as_dict(row: EnrollSecret) -> dict[str, Any]:
    return {
        "id": row.id,
        "group": row.group,
        "note": row.note,
        "created_by": row.created_by,
        "created_by_name": actor_name(row.created_by),
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "uses": row.uses,
    }
