"""Dashboard login: passwords and API tokens, the session cookie, logout, the rate limit,
open redirects and the security headers. In process against the real app and database."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.crypto import hashing
from server.dashboard.auth import RENEW_AFTER_SECONDS, SESSION_COOKIE
from server.dashboard.web import CONTENT_SECURITY_POLICY
from server.models import User
from server.store import tokens, users
from tests.server.dashboard_support import (
    PASSWORD,
    csrf_of,
    log_in_with_password,
    log_in_with_token,
    make_user,
    new_browser,
    post_form,
)

DB = sessionmaker[Session]


def cookie_header(response: Any, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(f"{name}="):
            return str(value)
    raise AssertionError(f"no {name} cookie set")


def test_password_login_sets_a_safe_cookie_and_logout_ends_the_session(
    app: FastAPI, client: TestClient, db: DB
) -> None:
    make_user(db, "alice", "analyst")
    browser = new_browser(app)
    answer = log_in_with_password(browser, "alice", PASSWORD, next_page="/findings?app=x")
    assert answer.status_code == 303 and answer.headers["location"] == "/findings?app=x"
    cookie = cookie_header(answer, SESSION_COOKIE)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http on loopback; see the https test
    stolen = browser.cookies[SESSION_COOKIE]
    page = browser.get("/")
    assert page.status_code == 200 and "alice" in page.text and "analyst" in page.text
    assert browser.get("/login").headers["location"] == "/"  # already signed in

    logout = post_form(browser, "/logout")
    assert logout.status_code == 303 and logout.headers["location"] == "/login"
    assert f"{SESSION_COOKIE}=" in cookie_header(logout, SESSION_COOKIE)
    assert browser.get("/").status_code == 303
    # A copy of the cookie taken before logging out no longer works either.
    replay = new_browser(app)
    replay.cookies.set(SESSION_COOKIE, stolen)
    assert replay.get("/").status_code == 303


def test_logging_out_of_a_session_due_for_renewal_does_not_renew_it(
    app: FastAPI, client: TestClient, api_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    browser = log_in_with_token(app, api_token("viewer"))
    token = csrf_of(browser.get("/").text)
    keeper = app.state.dashboard.sessions
    later = time.time() + RENEW_AFTER_SECONDS + 5
    monkeypatch.setattr(keeper, "_clock", lambda: later)
    logout = browser.post("/logout", data={"csrf_token": token})
    assert logout.status_code == 303
    cookies = [value for value in logout.headers.get_list("set-cookie")
               if value.startswith(f"{SESSION_COOKIE}=")]
    assert len(cookies) == 1 and "Max-Age=0" in cookies[0], cookies


def test_under_https_the_cookie_is_secure(app: FastAPI, client: TestClient,
                                          admin_token: str) -> None:
    browser = new_browser(app, base_url="https://testserver")
    page = browser.get("/login")
    answer = browser.post("/login", data={"csrf_token": csrf_of(page.text), "method": "token",
                                          "token": admin_token})
    assert answer.status_code == 303
    assert "Secure" in cookie_header(answer, SESSION_COOKIE)


def test_wrong_passwords_are_refused_then_the_account_is_throttled(
    app: FastAPI, client: TestClient, db: DB
) -> None:
    make_user(db, "bob", "viewer")
    browser = new_browser(app)
    for _ in range(5):
        answer = log_in_with_password(browser, "bob", "wrong password!!")
        assert answer.status_code == 401
        assert "do not match an active account" in answer.text
        assert SESSION_COOKIE not in browser.cookies
    # Now even the right password waits: the guess is not even checked.
    throttled = log_in_with_password(browser, "bob", PASSWORD)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many failed attempts" in throttled.text
    assert SESSION_COOKIE not in browser.cookies
    # Another account from the same address is not locked by bob's failures.
    make_user(db, "carol", "viewer")
    assert log_in_with_password(browser, "carol", PASSWORD).status_code == 303


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(
    app: FastAPI, client: TestClient, db: DB
) -> None:
    make_user(db, "dave", "viewer")
    browser = new_browser(app)
    unknown = log_in_with_password(browser, "nobody", "whatever it is")
    wrong = log_in_with_password(browser, "dave", "whatever it is")
    assert unknown.status_code == wrong.status_code == 401
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", unknown.text).replace("nobody", "dave") == strip.sub("", wrong.text)


def test_the_login_form_needs_its_own_csrf_token(app: FastAPI, client: TestClient,
                                                 admin_token: str) -> None:
    browser = new_browser(app)
    browser.get("/login")
    for token in ("", "forged"):
        answer = browser.post("/login", data={"csrf_token": token, "method": "token",
                                              "token": admin_token})
        assert answer.status_code == 403
        assert SESSION_COOKIE not in browser.cookies
    # A token from another browser's login page does not fit this browser's cookie.
    other = new_browser(app)
    foreign = csrf_of(other.get("/login").text)
    answer = browser.post("/login", data={"csrf_token": foreign, "method": "token",
                                          "token": admin_token})
    assert answer.status_code == 403


def test_token_login_refuses_revoked_agent_and_unknown_tokens(
    app: FastAPI, client: TestClient, db: DB, api_token: Callable[..., str],
    enrolled_agent: Any, enroll_secret: str,
) -> None:
    token = api_token("viewer")
    with db() as session:
        row = tokens.authenticate(session, token)
        assert row is not None
        tokens.revoke(session, row.id, actor="test")
        session.commit()
    for candidate in (token, enrolled_agent.token, enroll_secret, "wat_made-up"):
        browser = new_browser(app)
        page = browser.get("/login")
        answer = browser.post("/login", data={"csrf_token": csrf_of(page.text),
                                              "method": "token", "token": candidate})
        assert answer.status_code == 401, candidate
        assert "API token is unknown" in answer.text


def test_a_token_session_ends_when_the_token_is_revoked(
    app: FastAPI, client: TestClient, db: DB, api_token: Callable[..., str]
) -> None:
    token = api_token("analyst")
    browser = log_in_with_token(app, token)
    assert browser.get("/findings").status_code == 200
    with db() as session:
        row = tokens.authenticate(session, token)
        assert row is not None
        tokens.revoke(session, row.id, actor="test")
        session.commit()
    assert browser.get("/findings").status_code == 303


def test_disabling_a_user_or_changing_the_password_ends_their_sessions(
    app: FastAPI, client: TestClient, db: DB
) -> None:
    user_id = make_user(db, "erin", "admin")
    first, second = new_browser(app), new_browser(app)
    assert log_in_with_password(first, "erin", PASSWORD).status_code == 303
    assert log_in_with_password(second, "erin", PASSWORD).status_code == 303
    with db() as session:
        session.execute(sa.update(User).where(User.id == user_id)
                        .values(password_hash=hashing.hash_password("a brand new secret")))
        session.commit()
    assert first.get("/").status_code == 303
    assert log_in_with_password(second, "erin", "a brand new secret").status_code == 303
    assert second.get("/").status_code == 200
    with db() as session:
        users.set_disabled(session, user_id, True, actor="test")
        session.commit()
    assert second.get("/").status_code == 303
    assert log_in_with_password(new_browser(app), "erin", "a brand new secret"
                                ).status_code == 401


def test_a_tampered_session_cookie_is_refused(app: FastAPI, client: TestClient,
                                              api_token: Callable[..., str]) -> None:
    viewer = log_in_with_token(app, api_token("viewer"))
    body, mac = viewer.cookies[SESSION_COOKIE].split(".")
    admin_like = new_browser(app)
    # Flip one character of the payload (say, to point at another token id).
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    admin_like.cookies.set(SESSION_COOKIE, f"{flipped}.{mac}")
    assert admin_like.get("/").status_code == 303
    admin_like.cookies.set(SESSION_COOKIE, "garbage")
    assert admin_like.get("/").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/",
                                    "/\\evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_site(app: FastAPI, client: TestClient, admin_token: str,
                                        target: str) -> None:
    browser = new_browser(app)
    page = browser.get("/login", params={"next": target})
    answer = browser.post("/login", data={"csrf_token": csrf_of(page.text), "method": "token",
                                          "token": admin_token, "next": target})
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_security_headers_on_pages_errors_downloads_and_static_files(
    app: FastAPI, client: TestClient, api_token: Callable[..., str]
) -> None:
    viewer = log_in_with_token(app, api_token("viewer"))
    answers = [new_browser(app).get("/login"), viewer.get("/"), viewer.get("/secrets"),
               viewer.get("/findings/export.csv"), viewer.get("/static/dashboard.css"),
               viewer.get("/findings/999999")]
    assert [answer.status_code for answer in answers] == [200, 200, 403, 200, 200, 404]
    for answer in answers:
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
    assert all(answer.headers["cache-control"] == "no-store" for answer in answers[:4])
    # The API keeps its own JSON answers, without the dashboard's page headers.
    api = client.get("/healthz")
    assert "content-security-policy" not in api.headers


def test_static_files_revalidate_with_an_etag(app: FastAPI, client: TestClient) -> None:
    browser = new_browser(app)
    css = browser.get("/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    again = browser.get("/static/dashboard.css", headers={"If-None-Match": css.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert browser.get("/static/../settings.py").status_code == 404
    assert browser.get("/static/missing.css").status_code == 404
