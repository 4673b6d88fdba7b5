"""Request bodies: a hard size cap for every request, gzip/JSON decoding, and the OpenAPI
description of bodies that routes read by hand.

The cap is enforced in an ASGI middleware that buffers the body (at most the
limit) before any route runs, so no handler, form parser or body validator
ever sees more than `max_bytes`, whether the client sent a Content-Length or
chunked. A gzip body is then capped again after decompression: a small
bomb must not expand into gigabytes.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import ApiError, error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await error_response(400, "Content-Length is not a number")(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            # Afterwards, pass through: streaming responses wait here for the disconnect.
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, f"the request body is larger than {self.max_bytes} bytes",
            details=[{"limit_bytes": self.max_bytes}],
            # The unread rest of the body would otherwise be parsed as the next request.
            headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress one gzip member, refusing to produce more than `max_bytes`."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ApiError(422, f"the gzip body cannot be decoded: {exc}", code="malformed") from exc
    if len(out) > max_bytes:
        raise ApiError(413, f"the request body is larger than {max_bytes} bytes once decompressed",
                       details=[{"limit_bytes": max_bytes}])
    if not decompressor.eof or decompressor.unused_data:
        raise ApiError(422, "the gzip body is truncated or has trailing data", code="malformed")
    return out


def decode_json(
    body: bytes, *, content_type: str | None, content_encoding: str | None,
    allow_gzip: bool, max_bytes: int,
) -> Any:
    """The JSON value of a request body, or an ApiError saying what is wrong with it."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip" and allow_gzip:
        body = gunzip(body, max_bytes)
    elif encoding != "identity":
        raise ApiError(415, f"Content-Encoding {encoding!r} is not accepted here",
                       details=[{"accepted": ["identity", "gzip"] if allow_gzip else ["identity"]}])
    media_type = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, f"expected Content-Type application/json, not {media_type!r}")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(422, f"the body is not valid JSON: {exc}", code="malformed") from exc


def openapi_json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body by hand, so FastAPI cannot see it.

    The model's schema goes in whole, its `$defs` inlined (they would not resolve inside
    the OpenAPI document); fine for models that do not contain themselves.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": inline(schema)}}}}
