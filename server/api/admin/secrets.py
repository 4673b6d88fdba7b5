"""`/api/v1/secrets`: enrollment secrets — create (optionally for a group), list, revoke.

The secret itself is in the creation answer only; the server keeps its hash.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.api.admin.common import ROUTER_ERRORS, not_found
from server.api.deps import AdminDep, SessionDep
from server.api.params import RowId
from server.schemas.credentials import NewSecret, SecretPage, SecretRecord, SecretRequest
from server.schemas.errors import error_responses
from server.store import enroll_secrets

router = APIRouter(prefix="/api/v1", tags=["secrets"], responses=ROUTER_ERRORS)


@router.post("/secrets", status_code=201)
def create_secret(principal: AdminDep, body: SecretRequest, session: SessionDep) -> NewSecret:
    row, secret = enroll_secrets.create(session, group=body.group, note=body.note,
                                        actor=principal.actor)
    session.commit()
    return NewSecret.model_validate({**enroll_secrets.as_dict(row), "secret": secret})


@router.get("/secrets")
def list_secrets(principal: AdminDep, session: SessionDep) -> SecretPage:
    return SecretPage.model_validate({
        "items": [enroll_secrets.as_dict(row) for row in enroll_secrets.list_all(session)],
        "next_cursor": None})


@router.post("/secrets/{secret_id:int}/revoke", responses=error_responses(404))
def revoke_secret(principal: AdminDep, secret_id: RowId, session: SessionDep) -> SecretRecord:
    """No new agent enrolls with it; agents already enrolled keep working."""
    row = enroll_secrets.revoke(session, secret_id, principal.actor)
    if row is None:
        raise not_found(f"enrollment secret {secret_id}")
    session.commit()
    return SecretRecord.model_validate(enroll_secrets.as_dict(row))
