"""`/api/v1/secrets`: enrollment secrets — create (optionally for a group), list, revoke.

The secret itself is in the creation answer only; the server keeps its hash.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from server.api.admin.common import RowId, not_found
from server.api.deps import AdminDep, SessionDep
from server.store import enroll_secrets

router = APIRouter(prefix="/api/v1", tags=["secrets"])


class SecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str | None = Field(default=None, min_length=1, max_length=255,
                              description="agents enrolled with this secret join this group")
    note: str | None = Field(default=None, max_length=255)


@router.post("/secrets", status_code=201)
def create_secret(principal: AdminDep, body: SecretRequest, session: SessionDep) -> dict[str, Any]:
    row, secret = enroll_secrets.create(session, group=body.group, note=body.note,
                                        actor=principal.actor)
    session.commit()
    return {**enroll_secrets.as_dict(row), "secret": secret}


@router.get("/secrets")
def list_secrets(principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    return {"items": [enroll_secrets.as_dict(row) for row in enroll_secrets.list_all(session)],
            "next_cursor": None}


@router.post("/secrets/{secret_id:int}/revoke")
def revoke_secret(principal: AdminDep, secret_id: RowId, session: SessionDep) -> dict[str, Any]:
    """No new agent enrolls with it; agents already enrolled keep working."""
    row = enroll_secrets.revoke(session, secret_id, principal.actor)
    if row is None:
        raise not_found(f"enrollment secret {secret_id}")
    session.commit()
    return enroll_secrets.as_dict(row)
