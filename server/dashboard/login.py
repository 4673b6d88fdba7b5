"""Logging in (username and password, or an API token) and out."""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from server.api.deps import client_address
from server.dashboard.auth import (
    LOGIN_COOKIE,
    Session,
    ViewerPost,
    current_person,
    password_fingerprint,
)
from server.dashboard.verify_slots import VerifySlotsBusy
from server.dashboard.web import Dashboard, DashboardDep, DashboardRoute, redirect, safe_next
from server.store import tokens, users

log = logging.getLogger(__name__)
router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

BAD_CREDENTIALS = "That username and password do not match an active account."
BAD_TOKEN = "That API token is unknown, revoked, or belongs to a disabled account."
BUSY = "The server is checking many sign-ins at once. Please try again in a moment."
BUSY_RETRY_SECONDS = 2


@router.get("/login")
def login_page(request: Request, dashboard: DashboardDep, next: str = "/") -> Response:
    # Checked fully, not just decoded: a session whose user was disabled must get the form,
    # or the overview and this page would redirect to each other forever.
    if current_person(request, dashboard.sessions) is not None:
        return redirect(safe_next(next))
    return _form(request, dashboard, next)


@router.post("/login")
def log_in(
    request: Request,
    dashboard: DashboardDep,
    csrf_token: Annotated[str, Form()] = "",
    method: Annotated[str, Form()] = "password",
    username: Annotated[str, Form(max_length=255)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    token: Annotated[str, Form(max_length=255)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    if not dashboard.sessions.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), csrf_token):
        return _form(request, dashboard, next, status=403, username=username,
                     error="The login form expired. Please try again.")
    address = client_address(request)
    account = username if method == "password" else f"token@{address}"
    # Counted as failed now, before any hash: concurrent attempts cannot pass the limit.
    wait = dashboard.throttle.attempt(account, address)
    if wait > 0:
        minutes = max(1, math.ceil(wait / 60))
        return _form(request, dashboard, next, status=429, username=username,
                     headers={"Retry-After": str(math.ceil(wait))},
                     error=f"Too many failed attempts. Try again in {minutes} minute"
                           f"{'s' if minutes != 1 else ''}.")
    try:
        session = (_password_session(dashboard, request, username, password)
                   if method == "password" else _token_session(dashboard, request, token))
    except VerifySlotsBusy:
        dashboard.throttle.not_checked(account, address)
        log.warning("dashboard login from %s not checked: every password verify slot is busy",
                    address)
        return _form(request, dashboard, next, status=429, username=username,
                     headers={"Retry-After": str(BUSY_RETRY_SECONDS)}, error=BUSY)
    if session is None:
        log.warning("dashboard login failed for %r from %s", account, address)
        return _form(request, dashboard, next, status=401, username=username,
                     method=method, error=BAD_CREDENTIALS if method == "password" else BAD_TOKEN)
    dashboard.throttle.succeeded(account, address)
    response = redirect(safe_next(next))
    dashboard.sessions.set_cookie(request, response, session)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def log_out(request: Request, dashboard: DashboardDep, person: ViewerPost) -> Response:
    dashboard.sessions.log_out(person.session)
    # Signing in renewed the idle clock for this request; that cookie must not be sent back.
    request.state.renewed_session = None
    response = redirect("/login")
    dashboard.sessions.clear_cookie(request, response)
    return response


def _password_session(dashboard: Dashboard, request: Request, username: str,
                      password: str) -> Session | None:
    if not username or not password or "\x00" in username:
        return None  # a NUL is in no username, and PostgreSQL refuses to look one up
    # In a slot: each authenticate runs one argon2 verify (64 MiB), even for no such user.
    with dashboard.verify_slots.slot(), request.app.state.context.read_sessions() as db:
        user = users.authenticate(db, username, password)
    if user is None:
        return None
    return dashboard.sessions.new_session("user", user.id,
                                          password_fingerprint(user.password_hash))


def _token_session(dashboard: Dashboard, request: Request, token: str) -> Session | None:
    with request.app.state.context.read_sessions() as db:
        row = tokens.authenticate(db, token.strip())
    return None if row is None else dashboard.sessions.new_session("token", row.id)


def _form(request: Request, dashboard: Dashboard, next: str, status: int = 200,
          headers: dict[str, str] | None = None, username: str = "",
          method: str = "password", error: str = "") -> Response:
    nonce = dashboard.sessions.login_nonce()
    response = dashboard.page(
        request, "login.html", status=status, headers=headers, next=safe_next(next),
        login_csrf=dashboard.sessions.login_csrf_token(nonce), username=username,
        method=method, error=error)
    dashboard.sessions.set_login_cookie(request, response, nonce)
    return response
