"""Request bodies: a hard size cap for every request, gzip/JSON decoding, and the OpenAPI
description of bodies that routes read by hand.

The cap is enforced in an ASGI middleware that buffers the body (at most the
limit) before any route runs, so no handler, form parser or body validator
ever sees more than `max_bytes`, whether the client sent a Content-Length or
chunked. A gzip body is then capped again after decompression: a small
bomb must not expand into gigabytes.

The same middleware refuses a JSON body nested deeper than `MAX_JSON_DEPTH`
(422), before any route, authentication or parser sees it: Python's parser
and validators recurse, and 100,000 `[` would otherwise end in a
RecursionError. No Warden body comes near the limit. And in a JSON body,
`\\u0000` and unpaired surrogates (`\\ud800` alone), which Python reads but
PostgreSQL cannot store and UTF-8 cannot encode, become U+FFFD: text from an
endpoint (a plist, a registry value) may hold them, and refusing it would
leave the agent's batch stuck in its spool.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import ApiError, error_response

# Levels of arrays and objects a JSON body may nest; Warden's own bodies use fewer than ten.
MAX_JSON_DEPTH = 32
# Every byte but a bracket, deleted to leave the nesting alone.
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_OPENING = frozenset(b"[{")
# \u0000, or a high surrogate with the low one that should follow it, or a lone low one.
_UNSTORABLE = re.compile(
    rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?)")
_REPLACEMENT = rb"\ufffd"
TOO_DEEP = f"the JSON body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"


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
        if _is_identity(scope):
            if json_too_deep(body):
                await _too_deep()(scope, receive, send)
                return
            if _is_json(scope):
                # Same length: a Content-Length stays true.
                body = storable_json(body)
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


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in `body`, read as JSON, nest deeper than `limit`.

    A scan, not a parse, so it cannot recurse; about 4 ms for a 400 KB batch. On a body
    that is not JSON the answer means little, which is harmless: no form nests brackets,
    and the parser refuses such a body anyway.
    """
    # Escapes out first (`\\` before `\"`), so every remaining quote opens or closes a
    # string: the pieces between quotes alternate outside, inside, outside...
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    depth = 0
    for byte in brackets:
        if byte in _OPENING:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def storable_json(body: bytes) -> bytes:
    """JSON text whose strings every database stores: `\\u0000` and unpaired surrogate
    escapes replaced by `\\ufffd` (as long, byte for byte)."""
    return _UNSTORABLE.sub(_storable, body)


def _storable(match: re.Match[bytes]) -> bytes:
    escape = match.group()
    # Twelve bytes are a high surrogate and the low one after it: a character, kept.
    paired = len(escape) == 12 and escape[3:4] in b"89abAB"
    return escape if paired else _REPLACEMENT


def _too_deep() -> JSONResponse:
    return error_response(422, TOO_DEEP, code="too_deep",
                          details=[{"limit_depth": MAX_JSON_DEPTH}])


def _is_json(scope: Scope) -> bool:
    # FastAPI reads a body without a Content-Type as JSON too.
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type: bytes = value.split(b";", 1)[0].strip().lower()
            return media_type == b"application/json" or media_type.endswith(b"+json")
    return True


def _is_identity(scope: Scope) -> bool:
    # A compressed body is checked by decode_json, once it is inflated.
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            return value.strip().lower() in (b"", b"identity")
    return True


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
        # BodyLimitMiddleware checked the body as sent; inflated, it is new text to check.
        body = gunzip(body, max_bytes)
        if json_too_deep(body):
            raise ApiError(422, TOO_DEEP, code="too_deep",
                           details=[{"limit_depth": MAX_JSON_DEPTH}])
        body = storable_json(body)
    elif encoding != "identity":
        raise ApiError(415, f"Content-Encoding {encoding!r} is not accepted here",
                       details=[{"accepted": ["identity", "gzip"] if allow_gzip else ["identity"]}])
    media_type = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, f"expected Content-Type application/json, not {media_type!r}")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers too long to convert.
        raise ApiError(422, f"the body is not valid JSON: {exc}", code="malformed") from exc


def _no_constant(name: str) -> Any:
    # Python reads NaN and Infinity, which JSON has not: PostgreSQL would refuse to store them.
    raise ValueError(f"{name} is not a JSON number")


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
