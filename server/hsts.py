"""Strict-Transport-Security on every answer, API and dashboard alike, when served over TLS.

A browser that saw it once refuses plain HTTP to this host for a year, so a
network attacker cannot strip TLS from the dashboard login. Agents and the CLI
never speak plain HTTP to a TLS server anyway (docs/security.md).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS_VALUE = "max-age=31536000"


class StrictTransportSecurityMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not slow the agents' hot path."""

    def __init__(self, app: ASGIApp, value: str = HSTS_VALUE) -> None:
        self.app = app
        self.value = value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("Strict-Transport-Security",
                                                         self.value)
            await send(message)

        await self.app(scope, receive, send_with_hsts)
