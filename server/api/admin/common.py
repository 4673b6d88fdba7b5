"""What the admin routes share: the errors every route may answer, paging, common errors.

List filters are pydantic models (server.schemas.*Query) taken whole as the
query, so one model documents the parameters in OpenAPI and parses them; an
unknown parameter is refused too (a typo such as `?staus=open` would
otherwise silently list everything).
"""

from __future__ import annotations

import datetime as dt

from server.api.deps import ServerContext
from server.api.errors import ApiError
from server.schemas.errors import error_responses
from server.store.listing import CursorError

# Every admin route: a malformed request (a body that is not JSON, a bad Content-Length),
# no or a bad token, a role too low, a bad parameter, a body over the cap, the database
# busy. Routes add their own (404, 409, 415) on top.
ROUTER_ERRORS = error_responses(400, 401, 403, 413, 422, 503)


def silent_after(context: ServerContext) -> dt.timedelta:
    """How long an agent may go unseen before it counts as silent."""
    return context.settings.silent_after


def invalid_cursor(exc: CursorError) -> ApiError:
    return ApiError(422, f"invalid cursor: {exc}", code="invalid_cursor",
                    details=[{"loc": ["query", "cursor"], "field": "cursor",
                              "message": str(exc), "type": "value_error"}])


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}", code="not_found")
