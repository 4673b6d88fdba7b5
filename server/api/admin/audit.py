"""`/api/v1/audit`: who changed what and when, with before/after, newest first (admins only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from server.api.admin.common import (
    PAGING,
    check_params,
    cursor_of,
    invalid_cursor,
    limit_of,
    page,
)
from server.api.deps import AdminDep, SessionDep
from server.store import audit
from server.store.listing import CursorError, decode_cursor, encode_cursor

router = APIRouter(prefix="/api/v1", tags=["audit"])

_CURSOR_KIND = "audit:id:desc"
Text = Annotated[str | None, Query(description="exact, or a prefix ending in *")]


@router.get("/audit")
def list_audit(
    principal: AdminDep, request: Request, session: SessionDep,
    actor: Text = None, action: Text = None, target: Text = None,
    limit: Annotated[str | None, Query()] = None, cursor: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    check_params(request, ("actor", "action", "target", *PAGING))
    size = limit_of(request)
    before_id: int | None = None
    if (given := cursor_of(request)) is not None:
        try:
            before_id = decode_cursor(given, _CURSOR_KIND, (int,))[0]
        except CursorError as exc:
            raise invalid_cursor(exc) from exc
    entries = audit.list_entries(session, size + 1, before_id, actor=actor or None,
                                 action=action or None, target=target or None)
    next_cursor = encode_cursor(_CURSOR_KIND, [entries[size - 1].id]) \
        if len(entries) > size else None
    return page([audit.as_dict(entry) for entry in entries[:size]], next_cursor)
