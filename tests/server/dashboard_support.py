"""Helpers for the dashboard tests: a browser-like client per person, forms, real findings.

Each person gets their own TestClient (their own cookie jar) on the same app,
and logs in through the login form, CSRF token and all, the way a browser does.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.store import users

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery staple"


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


def new_browser(app: FastAPI, base_url: str = "http://testserver") -> TestClient:
    return TestClient(app, base_url=base_url, follow_redirects=False)


def log_in_with_token(app: FastAPI, token: str) -> TestClient:
    browser = new_browser(app)
    page = browser.get("/login")
    response = browser.post("/login", data={"csrf_token": csrf_of(page.text), "method": "token",
                                            "token": token, "next": "/"})
    assert response.status_code == 303, response.text
    return browser


def log_in_with_password(browser: TestClient, username: str, password: str,
                         next_page: str = "/") -> Any:
    page = browser.get("/login")
    return browser.post("/login", data={"csrf_token": csrf_of(page.text), "method": "password",
                                        "username": username, "password": password,
                                        "next": next_page})


def make_user(db: sessionmaker[Session], username: str, role: str,
              password: str = PASSWORD) -> int:
    with db() as session:
        user = users.create(session, username=username, password=password, role=role,
                            actor="test")
        session.commit()
        return user.id


def post_form(browser: TestClient, path: str, data: dict[str, str] | None = None,
              csrf_from: str = "/", **kwargs: Any) -> Any:
    """POST a form the way the page would: with the CSRF token of a page of this session."""
    token = csrf_of(browser.get(csrf_from).text)
    return browser.post(path, data={"csrf_token": token, **(data or {})}, **kwargs)


PeopleFactory = Callable[[str], TestClient]


def people(app: FastAPI, api_token: Callable[..., str]) -> PeopleFactory:
    """`person("analyst")`: a browser logged in with a fresh API token of that role."""
    return lambda role: log_in_with_token(app, api_token(role))
