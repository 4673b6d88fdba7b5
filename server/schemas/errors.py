"""The one error body every failure answers (built by server.api.errors), and the OpenAPI
`responses` entries that declare it per status."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable: not_found, validation_error, "
                                  "invalid_cursor, invalid_policy, …")
    message: str = Field(description="one line for people")
    details: list[Any] = Field(
        description="per problem; for validation errors `{loc, field, message, type}`, for "
                    "an invalid policy `{file, line, field, message, hint}`")


class ErrorResponse(BaseModel):
    error: ErrorInfo


_MEANINGS = {
    400: "the request is malformed: a body that cannot be parsed, a bad Content-Length",
    401: "no token, or an unknown or revoked one (`WWW-Authenticate: Bearer`)",
    403: "the token's role is too low for this",
    404: "no such resource",
    405: "the method is not allowed here (`Allow` lists the ones that are)",
    409: "the resource is not in a state that allows this",
    413: "the request body is larger than the server accepts",
    415: "the body's Content-Type or Content-Encoding is not accepted",
    422: "a parameter or the body is not valid; `details` names each problem",
    429: "too many attempts; wait `Retry-After` seconds",
    502: "a service the server relies on (an MDM) failed; `message` says why; nothing changed",
    503: "the database is busy or unavailable; retry after `Retry-After` seconds",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"schema": {"type": "string"}}},
    503: {"Retry-After": {"schema": {"type": "string"}}},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses, each with the error body model."""
    entries: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": _MEANINGS[status]}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        entries[status] = entry
    return entries
