"""The dashboard's pure parts, case by case: sessions, the login throttle, the chart,
policy diffs and inline errors, and the small formatting helpers."""

from __future__ import annotations

import datetime as dt

import pytest
from markupsafe import Markup
from sqlalchemy.orm import Session, sessionmaker

from policies.errors import ValidationIssue
from server.charts import bar_chart, nice_ticks
from server.dashboard.auth import (
    ABSOLUTE_SECONDS,
    IDLE_SECONDS,
    RENEW_AFTER_SECONDS,
    Person,
    SessionKeeper,
)
from server.dashboard.policies import annotate
from server.dashboard.sessions import LoggedOut
from server.dashboard.web import safe_next, time_ago, with_query
from server.policy_diff import rule_changes, setting_changes, source_diff
from server.throttling import LoginThrottle, ThrottleLimits


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- sessions -----------------------------------------------------------------------------


@pytest.fixture
def logged_out(db: sessionmaker[Session]) -> LoggedOut:
    """Logouts on the test's database (SQLite and PostgreSQL)."""
    return LoggedOut(db, db)


def test_a_session_survives_the_round_trip_and_nothing_else_does(
    logged_out: LoggedOut,
) -> None:
    keeper = SessionKeeper(b"k" * 32, logged_out, clock=Clock())
    session = keeper.new_session("user", 7, "fingerprint")
    cookie = keeper.encode(session)
    assert keeper.decode(cookie) == session
    other_key = SessionKeeper(b"x" * 32, logged_out, clock=Clock())
    body = cookie.split(".")[0]
    for bad in (None, "", "no-dot", cookie + "x", "a.b.c", other_key.encode(session),
                f"{body}.é", "é.é", "%%%.%%%"):
        assert keeper.decode(bad) is None, bad
    # Every login gets a fresh id.
    assert keeper.new_session("user", 7).sid != session.sid


@pytest.mark.parametrize(("idle", "age", "valid"), [
    (0, 0, True),
    (IDLE_SECONDS - 1, IDLE_SECONDS - 1, True),
    (IDLE_SECONDS + 1, IDLE_SECONDS + 1, False),       # left alone too long
    (60, ABSOLUTE_SECONDS + 1, False),                 # in use, but too old
])
def test_sessions_expire_when_idle_and_at_their_absolute_limit(
    idle: int, age: int, valid: bool, logged_out: LoggedOut
) -> None:
    clock = Clock()
    keeper = SessionKeeper(b"k" * 32, logged_out, clock=clock)
    session = keeper.new_session("token", 1)
    clock.now += age
    session_seen = session.__class__(**{**session.__dict__, "seen": int(clock.now - idle)})
    assert (keeper.decode(keeper.encode(session_seen)) is not None) == valid


def test_use_renews_the_idle_clock_at_most_once_a_minute_and_logout_bars_the_id(
    logged_out: LoggedOut,
) -> None:
    clock = Clock()
    keeper = SessionKeeper(b"k" * 32, logged_out, clock=clock)
    session = keeper.new_session("token", 1)
    assert keeper.renewed(session) is None
    clock.now += RENEW_AFTER_SECONDS
    renewed = keeper.renewed(session)
    assert renewed is not None and renewed.seen == int(clock.now)
    keeper.log_out(session)
    assert keeper.decode(keeper.encode(renewed)) is None  # same id, renewed or not
    keeper.log_out(session)  # twice is no error
    # Another keeper on the database (another server process) refuses it too.
    assert SessionKeeper(b"k" * 32, logged_out, clock=clock).decode(
        keeper.encode(renewed)) is None


def test_logouts_are_forgotten_once_their_sessions_would_have_expired(
    db: sessionmaker[Session], logged_out: LoggedOut,
) -> None:
    from server.store import revoked_sessions

    clock = Clock()
    keeper = SessionKeeper(b"k" * 32, logged_out, clock=clock)
    first = keeper.new_session("token", 1)
    keeper.log_out(first)
    clock.now += ABSOLUTE_SECONDS + 1
    second = keeper.new_session("token", 1)
    keeper.log_out(second)  # prunes the first, whose cookie has expired by now anyway
    with db() as session:
        assert not revoked_sessions.is_revoked(session, first.sid)
        assert revoked_sessions.is_revoked(session, second.sid)


def test_csrf_tokens_belong_to_one_session(logged_out: LoggedOut) -> None:
    keeper = SessionKeeper(b"k" * 32, logged_out, clock=Clock())
    one = Person("a", "a", "admin", keeper.new_session("token", 1))
    two = Person("a", "a", "admin", keeper.new_session("token", 1))
    assert keeper.csrf_ok(one, keeper.csrf_token(one))
    assert not keeper.csrf_ok(one, keeper.csrf_token(two))
    assert not keeper.csrf_ok(one, "")
    nonce = keeper.login_nonce()
    assert keeper.login_csrf_ok(nonce, keeper.login_csrf_token(nonce))
    assert not keeper.login_csrf_ok(None, keeper.login_csrf_token(nonce))
    assert not keeper.login_csrf_ok(keeper.login_nonce(), keeper.login_csrf_token(nonce))


# -- login throttle --------------------------------------------------------------------------


def test_the_throttle_limits_an_account_until_its_failures_age_out(
    db: sessionmaker[Session],
) -> None:
    clock = Clock()
    throttle = LoginThrottle(db, ThrottleLimits(per_account=3, per_address=100,
                                            window_seconds=600), clock=clock)
    for _ in range(3):
        assert throttle.retry_after("Bob", "10.0.0.1") == 0
        throttle.failed("Bob", "10.0.0.1")
        clock.now += 10
    # Case and spaces do not make a new account; another address does not help.
    assert throttle.retry_after(" bob", "10.0.0.9") == pytest.approx(600 - 30)
    assert throttle.retry_after("carol", "10.0.0.1") == 0
    clock.now += 600 - 30
    assert throttle.retry_after("bob", "10.0.0.1") == 0


def test_the_throttle_limits_an_address_trying_many_accounts_and_success_clears(
    db: sessionmaker[Session],
) -> None:
    clock = Clock()
    throttle = LoginThrottle(db, ThrottleLimits(per_account=3, per_address=4,
                                            window_seconds=600), clock=clock)
    for name in ("a", "b", "c", "d"):
        throttle.failed(name, "10.0.0.1")
    assert throttle.retry_after("e", "10.0.0.1") > 0
    assert throttle.retry_after("e", "10.0.0.2") == 0
    throttle.failed("f", "10.0.0.3")
    throttle.failed("f", "10.0.0.3")
    throttle.succeeded("f")
    throttle.failed("f", "10.0.0.4")
    assert throttle.retry_after("f", "10.0.0.4") == 0  # one failure since the success


# -- the chart --------------------------------------------------------------------------------


@pytest.mark.parametrize(("highest", "ticks"), [
    (0, [0, 1]),
    (1, [0, 1]),
    (3, [0, 1, 2, 3]),
    (7, [0, 2, 4, 6, 8]),
    (54, [0, 20, 40, 60]),
    (100, [0, 50, 100]),
    (1234, [0, 500, 1000, 1500]),
])
def test_nice_ticks_cover_the_highest_value_with_round_steps(highest: int,
                                                             ticks: list[int]) -> None:
    assert nice_ticks(highest) == ticks


def test_the_bar_chart_has_a_bar_and_an_exact_title_per_day() -> None:
    start = dt.date(2025, 3, 1)
    series = [(start + dt.timedelta(days=offset), offset % 3) for offset in range(10)]
    svg = bar_chart(series, "c1", "Opened <per> day")
    assert isinstance(svg, Markup)
    assert svg.count('<rect class="chart-bar"') == 10
    assert "<title>2025-03-02: 1 finding</title>" in svg
    assert "<title>2025-03-03: 2 findings</title>" in svg
    assert "Opened &lt;per&gt; day" in svg  # escaped
    assert 'aria-labelledby="c1-title c1-desc"' in svg
    assert "9 findings from 2025-03-01 to 2025-03-10" in svg
    assert "style=" not in svg  # the CSP allows no inline styles


# -- policy diffs and inline errors -------------------------------------------------------------


def test_source_diff_numbers_both_sides() -> None:
    old = "name: a\nrules:\n  - app: telegram\n    verdict: deny\n"
    new = "name: a\nrules:\n  - app: telegram\n    verdict: alert\n  - app: signal\n"
    [hunk] = source_diff(old, new)
    kinds = [(line.kind, line.old_number, line.new_number, line.text) for line in hunk.lines]
    assert kinds == [
        ("context", 1, 1, "name: a"), ("context", 2, 2, "rules:"),
        ("context", 3, 3, "  - app: telegram"),
        ("removed", 4, None, "    verdict: deny"),
        ("added", None, 4, "    verdict: alert"), ("added", None, 5, "  - app: signal"),
    ]
    assert hunk.header == "@@ -1,4 +1,5 @@"
    assert source_diff(old, old) == []


def test_rule_and_setting_changes_name_what_differs() -> None:
    old = {"policy": {"name": "p", "mode": "audit"},
           "rules": {"telegram": {"verdict": "deny", "action": "notify"},
                     "viber": {"verdict": "alert"}}}
    new = {"policy": {"name": "p", "mode": "enforce"},
           "rules": {"telegram": {"verdict": "deny", "action": "terminate"},
                     "signal": {"verdict": "allow"}}}
    changes = {change.app: change for change in rule_changes(old, new)}
    assert changes["telegram"].kind == "changed"
    assert changes["telegram"].fields == [("action", "notify", "terminate")]
    assert changes["signal"].kind == "added" and ("verdict", None, "allow") in \
        changes["signal"].fields
    assert changes["viber"].kind == "removed"
    assert setting_changes(old, new) == [("mode", "audit", "enforce")]


def test_issues_are_placed_at_their_lines_or_listed_apart() -> None:
    source = "name: x\nrules:\n  - app: nope\n"
    issues = [ValidationIssue("p.yaml", 3, "rules[0].app", "unknown app"),
              ValidationIssue("p.yaml", None, "", "empty"),
              ValidationIssue("p.yaml", 40, "", "past the end")]
    lines = annotate(source, issues)
    assert [line["number"] for line in lines] == [1, 2, 3]
    assert [issue.message for issue in lines[2]["issues"]] == ["unknown app"]
    assert lines[0]["issues"] == [] and lines[1]["issues"] == []


# -- formatting helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "just now"), (60, "1 minute ago"), (119, "1 minute ago"), (7200, "2 hours ago"),
    (86_400 * 3, "3 days ago"),
])
def test_time_ago(seconds: int, text: str) -> None:
    now = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    assert time_ago(now - dt.timedelta(seconds=seconds), now) == text
    assert time_ago(None) == "never"


@pytest.mark.parametrize(("target", "safe"), [
    ("/findings?app=telegram", "/findings?app=telegram"), ("", "/"), (None, "/"),
    ("//evil.example", "/"), ("https://evil.example", "/"), ("/\\evil", "/"),
])
def test_safe_next_keeps_only_local_paths(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


def test_with_query_drops_empty_values_and_encodes() -> None:
    assert with_query("/findings", {"app": "telegram", "host": "", "x": None}) == \
        "/findings?app=telegram"
    assert with_query("/findings", {"host": "desk-*&a=b"}) == "/findings?host=desk-%2A%26a%3Db"
    assert with_query("/hosts", {}) == "/hosts"
