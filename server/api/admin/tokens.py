"""`/api/v1/tokens`: API tokens for people and scripts, each with a role; shown once."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from server.api.admin.common import RowId, not_found
from server.api.deps import AdminDep, SessionDep
from server.store import tokens

router = APIRouter(prefix="/api/v1", tags=["tokens"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, description="who or what uses it")
    role: Literal["viewer", "analyst", "admin"]


@router.post("/tokens", status_code=201)
def create_token(principal: AdminDep, body: TokenRequest, session: SessionDep) -> dict[str, Any]:
    row, token = tokens.create(session, name=body.name, role=body.role, actor=principal.actor)
    session.commit()
    return {**tokens.as_dict(row), "token": token}


@router.get("/tokens")
def list_tokens(principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    return {"items": [tokens.as_dict(row) for row in tokens.list_all(session)],
            "next_cursor": None}


@router.post("/tokens/{token_id:int}/revoke")
def revoke_token(principal: AdminDep, token_id: RowId, session: SessionDep) -> dict[str, Any]:
    row = tokens.revoke(session, token_id, principal.actor)
    if row is None:
        raise not_found(f"API token {token_id}")
    session.commit()
    return tokens.as_dict(row)
