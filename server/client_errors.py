"""What goes wrong talking to Warden's admin API, as one line fit for a terminal."""

from __future__ import annotations

from typing import Any

import requests


class WardenClientError(Exception):
    """Why a call did not succeed, as one line."""


class ApiError(WardenClientError):
    """The server answered with an error status (its JSON body: {"error": {...}})."""

    def __init__(self, status: int, message: str, details: Any = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details if details is not None else []
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


class ConnectionFailed(WardenClientError):
    """The server could not be reached at all."""


def json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise WardenClientError(f"the server's answer to {response.request.method} "
                                f"{response.url} is not JSON") from exc


def api_error(response: requests.Response) -> ApiError:
    status = response.status_code
    fallback = f"{response.reason or 'error'} from {response.url}"
    try:
        body = response.json()
    except ValueError:
        return ApiError(status, fallback)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return ApiError(status, str(error.get("message") or fallback), error.get("details"),
                        error.get("code"))
    # FastAPI's own shape, should a response bypass the server's error handlers.
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return ApiError(status, detail)
    if isinstance(detail, list):
        return ApiError(status, "the request was not accepted", detail)
    return ApiError(status, fallback)


def reason(exc: requests.RequestException) -> str:
    text = str(exc)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered \
            or "getaddrinfo failed" in lowered or "name resolution" in lowered:
        return "host name not found"
    if "certificate" in lowered:
        return "certificate not trusted"
    return text if len(text) <= 200 else text[:200] + "…"
