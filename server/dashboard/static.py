"""The dashboard's stylesheet and script, read once at startup and served with an ETag.

Two small files do not need a static-files app; serving them from memory also
gives them the dashboard's security headers and a fixed list of names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.dashboard.web import PageError, secure

_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def load_static() -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in (resources.files("server") / "static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            files[entry.name] = StaticFile(body, _TYPES[suffix],
                                           f'"{hashlib.sha256(body).hexdigest()[:16]}"')
    return files


def static_router(files: dict[str, StaticFile]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/static/{name}")
    def static_file(name: str, request: Request) -> Response:
        found = files.get(name)
        if found is None:
            raise PageError(404, f"There is no static file {name!r}.")
        # Revalidate each time: a cheap 304, and an upgrade never serves a stale stylesheet.
        headers = {"ETag": found.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == found.etag:
            return secure(Response(status_code=304, headers=headers))
        return secure(Response(found.body, media_type=found.media_type, headers=headers))

    return router
