"""`/api/v1/users`: people who sign in to the dashboard — create, list, disable, enable.

Disabling a user also stops every API token issued to them.
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from server.api.admin.common import RowId, not_found
from server.api.deps import AdminDep, SessionDep
from server.api.errors import ApiError
from server.store import users

router = APIRouter(prefix="/api/v1", tags=["users"])


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=255, pattern=r"^\S+$")
    # Long passphrases are welcome; the cap only stops hashing megabytes.
    password: str = Field(min_length=10, max_length=1024)
    role: Literal["viewer", "analyst", "admin"]


@router.post("/users", status_code=201)
def create_user(principal: AdminDep, body: UserRequest, session: SessionDep) -> dict[str, Any]:
    if users.get_by_username(session, body.username) is not None:
        raise _taken(body.username)
    try:
        user = users.create(session, username=body.username, password=body.password,
                            role=body.role, actor=principal.actor)
        session.commit()
    except sa.exc.IntegrityError as exc:  # created by someone else just now
        raise _taken(body.username) from exc
    return users.as_dict(user)


def _taken(username: str) -> ApiError:
    return ApiError(409, f"the username {username!r} is taken", code="username_taken")


@router.get("/users")
def list_users(principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    return {"items": [users.as_dict(user) for user in users.list_all(session)],
            "next_cursor": None}


@router.post("/users/{user_id:int}/disable")
def disable_user(principal: AdminDep, user_id: RowId, session: SessionDep) -> dict[str, Any]:
    return _set_disabled(session, user_id, True, principal.actor)


@router.post("/users/{user_id:int}/enable")
def enable_user(principal: AdminDep, user_id: RowId, session: SessionDep) -> dict[str, Any]:
    return _set_disabled(session, user_id, False, principal.actor)


def _set_disabled(session: Session, user_id: int, disabled: bool, actor: str) -> dict[str, Any]:
    user = users.set_disabled(session, user_id, disabled, actor)
    if user is None:
        raise not_found(f"user {user_id}")
    session.commit()
    return users.as_dict(user)
