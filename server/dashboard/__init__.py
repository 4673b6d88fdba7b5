"""The review dashboard: server-rendered pages for security staff and administrators.

`create_app` calls `install(app, context)` when this package is present. Each
page lives in a module of its own with its `router`; `auth` holds sessions,
CSRF and roles, `web` the templates, headers and error pages they share.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from server.api.deps import ServerContext
from server.dashboard import (
    audit,
    connectors,
    exceptions,
    exports,
    findings,
    hosts,
    login,
    overview,
    policies,
    reports,
    secrets,
    violations,
)
from server.dashboard.auth import SessionKeeper
from server.dashboard.sessions import LoggedOut
from server.dashboard.static import load_static, static_router
from server.dashboard.web import (
    Dashboard,
    LoginRequired,
    PageError,
    build_templates,
    redirect,
    secure,
    with_query,
)
from server.throttling import LoginThrottle


def install(app: FastAPI, context: ServerContext) -> None:
    app.state.dashboard = Dashboard(
        templates=build_templates(),
        sessions=SessionKeeper.from_signing_key(
            context.settings.signing_key_path,
            LoggedOut(context.read_sessions, context.write_sessions)),
        throttle=LoginThrottle(context.write_sessions),
    )
    for module in (login, overview, exports, violations, findings, hosts, policies, exceptions,
                   audit, secrets, reports, connectors):
        app.include_router(module.router)
    app.include_router(static_router(load_static()))
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(PageError, _error_page)


async def _to_login(request: Request, exc: Exception) -> Response:
    # Back to the page after logging in; a form's POST cannot be replayed, so the overview.
    target = "/"
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return secure(redirect(with_query("/login", {"next": target})))


async def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard.page(request, "error.html", status=exc.status, title=exc.title,
                          message=exc.message)
