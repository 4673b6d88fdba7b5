"""server.throttling.FailureWindow, the counting behind the login and enrollment limits,
on the database (SQLite and PostgreSQL): what one window counts, every other sees."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from server.store import throttles
from server.throttling import FailureWindow, ThrottleScope
from tests.server.test_dashboard_parts import Clock

DB = sessionmaker[Session]
Make = Callable[..., FailureWindow]


@pytest.fixture
def make(db: DB) -> Make:
    def build(window: float = 600, clock: Clock | None = None,
              scope: ThrottleScope = "enroll") -> FailureWindow:
        return FailureWindow(db, scope, window, clock=clock or Clock())

    return build


def test_a_key_waits_once_it_reached_the_limit_until_the_oldest_failure_ages_out(
    make: Make,
) -> None:
    clock = Clock()
    window = make(600, clock)
    for _ in range(3):
        assert window.retry_after("10.0.0.1", limit=3) == 0
        window.failed("10.0.0.1")
        clock.now += 10
    assert window.retry_after("10.0.0.1", limit=3) == pytest.approx(600 - 30)
    assert window.retry_after("10.0.0.1", limit=4) == 0  # the limit is the caller's
    assert window.retry_after("10.0.0.2", limit=3) == 0
    clock.now += 600 - 30
    assert window.retry_after("10.0.0.1", limit=3) == 0  # the first failure aged out
    clock.now += 20
    assert window.retry_after("10.0.0.1", limit=1) == 0  # all of them


def test_forget_clears_one_key_only(make: Make) -> None:
    window = make()
    window.failed("a", "b")
    window.forget("a")
    assert window.retry_after("a", limit=1) == 0
    assert window.retry_after("b", limit=1) > 0


def test_another_window_on_the_database_sees_the_same_counts_and_scopes_stay_apart(
    make: Make,
) -> None:
    clock = Clock()
    one, other = make(600, clock), make(600, clock)
    assert one.take(("10.0.0.1", 2)) == 0
    assert other.take(("10.0.0.1", 2)) == 0  # the second failure, counted by "another process"
    assert one.take(("10.0.0.1", 2)) > 0
    assert other.retry_after("10.0.0.1", limit=2) > 0
    assert make(600, clock, scope="login").retry_after("10.0.0.1", limit=1) == 0


def test_pruning_deletes_keys_whose_failures_all_aged_out(make: Make, db: DB) -> None:
    clock = Clock()
    window = make(600, clock)
    for index in range(20):
        window.failed(f"old{index}")
    clock.now += 300
    window.failed("recent", "old0")
    clock.now += 301
    assert window.prune() == 19
    with db() as session:
        assert throttles.count(session, "enroll") == 2
    assert window.retry_after("recent", limit=1) > 0
    assert window.retry_after("old0", limit=1) > 0  # its second failure is still recent


def test_attempts_prune_by_themselves_now_and_then(make: Make, db: DB) -> None:
    clock = Clock()
    window = make(60, clock)
    for index in range(5):
        window.failed(f"gone{index}")
    clock.now += 3600  # long past the window and the prune interval
    assert window.take(("fresh", 3)) == 0
    with db() as session:
        assert throttles.count(session, "enroll") == 1


def test_a_long_account_key_is_stored_as_its_digest_and_still_limited(db: DB) -> None:
    from server.throttling import LoginThrottle, ThrottleLimits

    throttle = LoginThrottle(db, ThrottleLimits(per_account=2, per_address=100), Clock())
    name = "ß" * 255  # casefolds to 510 characters, more than the key column holds
    assert throttle.attempt(name, "10.0.0.1") == 0
    assert throttle.attempt(name.upper(), "10.0.0.2") == 0
    assert throttle.attempt(name, "10.0.0.3") > 0


def test_failures_from_many_threads_are_all_counted(make: Make) -> None:
    window = make()
    start = threading.Barrier(8)

    def hammer(worker: int) -> None:
        start.wait()
        for index in range(25):
            window.failed("shared", f"worker{worker}-{index % 5}")
            window.retry_after(f"worker{worker}-{index % 5}", limit=3)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert window.retry_after("shared", limit=200) > 0
    assert window.retry_after("shared", limit=201) == 0


def test_take_checks_and_counts_in_one_step_across_threads(make: Make) -> None:
    window = make()
    start = threading.Barrier(12)
    waits: list[float] = []

    def attempt() -> None:
        start.wait()
        waits.append(window.take(("account", 5), ("address", 30)))

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Five went on; seven were refused and counted nowhere.
    assert sorted(wait > 0 for wait in waits) == [False] * 5 + [True] * 7
    assert window.retry_after("address", limit=6) == 0
    assert window.retry_after("address", limit=5) > 0


def test_give_back_uncounts_the_latest_failure_only(make: Make) -> None:
    window = make()
    window.failed("key")
    window.failed("key")
    window.give_back("key")
    assert window.retry_after("key", limit=1) > 0
    window.give_back("key")
    window.give_back("key")  # nothing left: no error
    assert window.retry_after("key", limit=1) == 0
