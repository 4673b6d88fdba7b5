"""What the admin routes share: query parameter checks, paging, and common errors.

Query parameters are checked by hand against the store's own parsers
(server.store.findings_query and friends), so the dashboard and the API
accept and refuse exactly the same values. A parameter the route does not
know is refused too: a typo such as `?staus=open` would otherwise silently
list everything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Path, Request

from server.api.deps import ServerContext
from server.api.errors import ApiError
from server.store.findings_query import parse_limit
from server.store.listing import CursorError, FilterError

# Row ids are `integer` columns on PostgreSQL: a larger number cannot name a row, and
# handed to the database it fails there (a 500) instead of being refused here (a 422).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
PAGING = ("limit", "cursor")


def silent_after(context: ServerContext) -> dt.timedelta:
    """How long an agent may go unseen before it counts as silent."""
    settings = context.settings
    return dt.timedelta(
        seconds=settings.checkin_interval_seconds * settings.silent_after_intervals)


def check_params(request: Request, allowed: Iterable[str]) -> None:
    known = set(allowed)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise invalid_query(FilterError([
            (name, f"unknown query parameter; this route takes {', '.join(sorted(known))}")
            for name in unknown]))


def limit_of(request: Request, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    try:
        return parse_limit(request.query_params.get("limit"), default, maximum)
    except ValueError as exc:
        raise invalid_query(FilterError([("limit", str(exc))])) from exc


def cursor_of(request: Request) -> str | None:
    return request.query_params.get("cursor") or None


def invalid_query(exc: FilterError) -> ApiError:
    return ApiError(422, f"invalid query parameters: {exc}", details=exc.details())


def invalid_cursor(exc: CursorError) -> ApiError:
    return ApiError(422, f"invalid cursor: {exc}", code="invalid_cursor",
                    details=[{"loc": ["query", "cursor"], "field": "cursor",
                              "message": str(exc), "type": "value_error"}])


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}", code="not_found")


def page(items: list[dict[str, Any]], next_cursor: str | None = None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}
