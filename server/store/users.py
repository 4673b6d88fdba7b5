"""People who sign in to the dashboard: a username, an argon2 password hash, a role."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.crypto import hashing
from server.db import utcnow
from server.models import ROLES, User
from server.store import audit


def create(session: Session, *, username: str, password: str, role: str, actor: str) -> User:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    problem = hashing.password_problem(password)
    if problem:
        raise ValueError(problem)
    user = User(username=username, password_hash=hashing.hash_password(password), role=role,
                created_at=utcnow(), disabled=False)
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.create", f"user:{user.id}", after=as_dict(user))
    return user


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalars(sa.select(User).where(User.username == username)).one_or_none()


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = get_by_username(session, username)
    if user is None:
        # Hash anyway, so a wrong username takes as long as a wrong password.
        hashing.verify_password(password, _dummy_hash())
        return None
    if user.disabled or not hashing.verify_password(password, user.password_hash):
        return None
    return user


def list_all(session: Session) -> list[User]:
    return list(session.scalars(sa.select(User).order_by(User.id)))


def set_disabled(session: Session, user_id: int, disabled: bool, actor: str) -> User | None:
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        return None
    before = as_dict(user)
    user.disabled = disabled
    audit.record(session, actor, "user.disable" if disabled else "user.enable",
                 f"user:{user.id}", before=before, after=as_dict(user))
    return user


def as_dict(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "created_at": user.created_at.isoformat(),
        "disabled": user.disabled,
    }


@functools.cache
def _dummy_hash() -> str:
    return hashing.hash_password("not a password")
