"""`/api/v1/users`: people who sign in to the dashboard — create, list, disable, enable.

Disabling a user also stops every API token issued to them.
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from sqlalchemy.orm import Session

from server.api.admin.common import ROUTER_ERRORS, not_found
from server.api.deps import AdminDep, SessionDep
from server.api.errors import ApiError
from server.api.params import RowId
from server.schemas.credentials import UserPage, UserRecord, UserRequest
from server.schemas.errors import error_responses
from server.store import users

router = APIRouter(prefix="/api/v1", tags=["users"], responses=ROUTER_ERRORS)


@router.post("/users", status_code=201, responses=error_responses(409))
def create_user(principal: AdminDep, body: UserRequest, session: SessionDep) -> UserRecord:
    if users.get_by_username(session, body.username) is not None:
        raise _taken(body.username)
    try:
        user = users.create(session, username=body.username, password=body.password,
                            role=body.role, actor=principal.actor)
        session.commit()
    except sa.exc.IntegrityError as exc:  # created by someone else just now
        raise _taken(body.username) from exc
    return UserRecord.model_validate(users.as_dict(user))


def _taken(username: str) -> ApiError:
    return ApiError(409, f"the username {username!r} is taken", code="username_taken")


@router.get("/users")
def list_users(principal: AdminDep, session: SessionDep) -> UserPage:
    return UserPage.model_validate({"items": [users.as_dict(user)
                                              for user in users.list_all(session)],
                                    "next_cursor": None})


@router.post("/users/{user_id:int}/disable", responses=error_responses(404))
def disable_user(principal: AdminDep, user_id: RowId, session: SessionDep) -> UserRecord:
    return _set_disabled(session, user_id, True, principal.actor)


@router.post("/users/{user_id:int}/enable", responses=error_responses(404))
def enable_user(principal: AdminDep, user_id: RowId, session: SessionDep) -> UserRecord:
    return _set_disabled(session, user_id, False, principal.actor)


def _set_disabled(session: Session, user_id: int, disabled: bool, actor: str) -> UserRecord:
    user = users.set_disabled(session, user_id, disabled, actor)
    if user is None:
        raise not_found(f"user {user_id}")
    session.commit()
    return UserRecord.model_validate(users.as_dict(user))
