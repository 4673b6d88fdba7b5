"""`/api/v1/audit`: who changed what and when, with before/after, newest first (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.api.admin.common import ROUTER_ERRORS, invalid_cursor
from server.api.deps import AdminDep, SessionDep
from server.schemas.audit import AuditPage, AuditQuery
from server.store import audit
from server.store.listing import CursorError, decode_cursor, encode_cursor

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=ROUTER_ERRORS)

_CURSOR_KIND = "audit:id:desc"


@router.get("/audit")
def list_audit(
    principal: AdminDep, query: Annotated[AuditQuery, Query()], session: SessionDep
) -> AuditPage:
    size = query.limit
    before_id: int | None = None
    if query.cursor is not None:
        try:
            before_id = decode_cursor(query.cursor, _CURSOR_KIND, (int,))[0]
        except CursorError as exc:
            raise invalid_cursor(exc) from exc
    entries = audit.list_entries(session, size + 1, before_id, actor=query.actor,
                                 action=query.action, target=query.target)
    next_cursor = encode_cursor(_CURSOR_KIND, [entries[size - 1].id]) \
        if len(entries) > size else None
    return AuditPage.model_validate({"items": [audit.as_dict(entry) for entry in entries[:size]],
                                     "next_cursor": next_cursor})
