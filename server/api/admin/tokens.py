"""`/api/v1/tokens`: API tokens for people and scripts, each with a role; shown once."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.admin.common import ROUTER_ERRORS, not_found
from server.api.deps import AdminDep, SessionDep
from server.api.params import RowId
from server.schemas.credentials import NewToken, TokenPage, TokenRecord, TokenRequest
from server.schemas.errors import error_responses
from server.store import tokens

router = APIRouter(prefix="/api/v1", tags=["tokens"], responses=ROUTER_ERRORS)


@router.post("/tokens", status_code=201)
def create_token(principal: AdminDep, body: TokenRequest, session: SessionDep) -> NewToken:
    row, token = tokens.create(session, name=body.name, role=body.role, actor=principal.actor)
    session.commit()
    return NewToken.model_validate({**tokens.as_dict(row), "token": token})


@router.get("/tokens")
def list_tokens(principal: AdminDep, session: SessionDep) -> TokenPage:
    return TokenPage.model_validate({
        "items": [tokens.as_dict(row) for row in tokens.list_all(session)],
        "next_cursor": None})


@router.post("/tokens/{token_id:int}/revoke", responses=error_responses(404))
def revoke_token(principal: AdminDep, token_id: RowId, session: SessionDep) -> TokenRecord:
    row = tokens.revoke(session, token_id, principal.actor)
    if row is None:
        raise not_found(f"API token {token_id}")
    session.commit()
    return TokenRecord.model_validate(tokens.as_dict(row))
