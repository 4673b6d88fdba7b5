"""Password checks are bounded: an attempt is counted before its hash, and only a few
argon2 verifications (64 MiB each) run at once.

Concurrent logins over real HTTP to the app on a real uvicorn, each with its own
cookie jar and CSRF token, released together by a barrier. What the server did is
read from its own instruments (`VerifySlots.started`, `.peak`), not from timing.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from server.dashboard.verify_slots import VerifySlots
from tests.server.dashboard_support import PASSWORD, make_user

DB = sessionmaker[Session]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def login_all(base_url: str, usernames: list[str], password: str) -> list[int]:
    """Each username logs in from its own browser, all at the same moment; the statuses."""
    browsers = [httpx.Client(base_url=base_url, follow_redirects=False, timeout=120)
                for _ in usernames]
    tokens = []
    for browser in browsers:
        found = _CSRF.search(browser.get("/login").text)
        assert found
        tokens.append(html.unescape(found.group(1)))
    statuses = [0] * len(usernames)
    start = threading.Barrier(len(usernames))

    def post(index: int) -> None:
        start.wait()
        statuses[index] = browsers[index].post("/login", data={
            "csrf_token": tokens[index], "method": "password",
            "username": usernames[index], "password": password, "next": "/"}).status_code

    threads = [threading.Thread(target=post, args=(index,)) for index in range(len(usernames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for browser in browsers:
        browser.close()
    return statuses


@pytest.fixture
def slots(app: FastAPI) -> Callable[..., VerifySlots]:
    def install(count: int = 2, wait_seconds: float = 120.0) -> VerifySlots:
        made = VerifySlots(count, wait_seconds)
        app.state.dashboard.verify_slots = made
        return made

    return install


def test_twelve_concurrent_wrong_passwords_cost_five_hashes(
    app: FastAPI, live_server: str, db: DB, slots: Callable[..., VerifySlots]
) -> None:
    make_user(db, "alice", "analyst")
    verifier = slots()
    statuses = login_all(live_server, ["alice"] * 12, "wrong " + PASSWORD)
    # The limit of five failures per account held: five were checked, the rest refused
    # before any hash, though all twelve arrived together.
    assert sorted(statuses) == [401] * 5 + [429] * 7
    assert verifier.started == 5
    # And the right password is refused too now: the account waits.
    assert login_all(live_server, ["alice"], PASSWORD) == [429]
    assert verifier.started == 5


def test_only_a_few_verifications_run_at_once(
    app: FastAPI, live_server: str, db: DB, slots: Callable[..., VerifySlots]
) -> None:
    verifier = slots(count=2)
    # Twenty accounts (most do not exist: those are hashed against a dummy all the same).
    statuses = login_all(live_server, [f"user{index}" for index in range(20)], "guess")
    assert statuses == [401] * 20
    assert verifier.started == 20
    assert 1 <= verifier.peak <= 2


def test_a_login_with_no_free_slot_is_answered_429_and_not_counted(
    app: FastAPI, live_server: str, db: DB, slots: Callable[..., VerifySlots]
) -> None:
    make_user(db, "bob", "viewer")
    verifier = slots(count=1, wait_seconds=0.2)
    with verifier.slot():  # someone else's verification holds the only slot
        statuses = login_all(live_server, ["bob"], PASSWORD)
    assert statuses == [429]
    assert verifier.started == 1
    # The refused attempt was given back: five wrong ones still get checked after it.
    verifier.wait_seconds = 120
    assert sorted(login_all(live_server, ["bob"] * 6, "wrong")) == [401] * 5 + [429]
    assert login_all(live_server, ["bob"], PASSWORD) == [429]
