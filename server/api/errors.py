"""One JSON error shape for every failure: `{"error": {"code", "message", "details"}}`.

Handlers here replace FastAPI's defaults (plain-text 500s, `{"detail": ...}`
404s and 422s), so a client — agent, CLI or browser script — parses one
shape whatever went wrong, including routing errors and crashes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}
# How long a client should wait before retrying when the database is busy or down.
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """Raise anywhere in a request to answer with this status and error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Sequence[Any] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, f"http_{status}")
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: Sequence[Any] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code or _CODES.get(status, f"http_{status}"), "message": message,
                      "details": list(details)}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors, trimmed to what a client needs: where and what.

    `field` names a query parameter as it is spelt in the URL (`status`), and a body
    field with its place (`body.events[3].time`).
    """
    details = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if isinstance(part, str | int)]
        field = _dotted(loc[1:] if loc[:1] == ["query"] else loc)
        details.append({"loc": loc, "field": field, "message": error.get("msg", ""),
                        "type": error.get("type", "")})
    return details


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa.exc.OperationalError, _database_error)
    # The connection pool exhausted under a burst: as unavailable as a locked database.
    app.add_exception_handler(sa.exc.TimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, code=exc.code, details=exc.details,
                          headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such resource: {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(405, message, headers={"Allow": _allowed_methods(request)})
    return error_response(exc.status_code, message, headers=exc.headers)


def _allowed_methods(request: Request) -> str:
    # Starlette names only the first route that matched the path; `/secrets` has a POST
    # route and a GET route, and `Allow` must list both (RFC 9110).
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods \
                and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "the request is not valid", details=validation_details(
        exc.errors()))


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Locked SQLite file past the busy timeout, PostgreSQL restarting: the client may retry.
    log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "the database is busy or unavailable; retry later",
                          code="database_unavailable",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error")
