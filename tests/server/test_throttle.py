"""server.throttle.FailureWindow, the counting behind the login and enrollment limits."""

from __future__ import annotations

import threading

import pytest

from server.throttle import FailureWindow
from tests.server.test_dashboard_parts import Clock


def test_a_key_waits_once_it_reached_the_limit_until_the_oldest_failure_ages_out() -> None:
    clock = Clock()
    window = FailureWindow(600, clock=clock)
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


def test_forget_clears_one_key_only() -> None:
    window = FailureWindow(600, clock=Clock())
    window.failed("a", "b")
    window.forget("a")
    assert window.retry_after("a", limit=1) == 0
    assert window.retry_after("b", limit=1) > 0


def test_the_oldest_keys_are_forgotten_beyond_the_bound() -> None:
    window = FailureWindow(600, clock=Clock(), max_keys=10)
    window.failed("first")
    assert window.retry_after("first", limit=1) > 0
    for index in range(20):
        window.failed(f"key{index}")
    assert window.retry_after("first", limit=1) == 0
    assert window.retry_after("key19", limit=1) > 0


def test_failures_from_many_threads_are_all_counted() -> None:
    window = FailureWindow(600, clock=Clock(), max_keys=50)
    start = threading.Barrier(8)

    def hammer(worker: int) -> None:
        start.wait()
        for index in range(500):
            window.failed("shared", f"worker{worker}-{index % 100}")
            window.retry_after(f"worker{worker}-{index % 100}", limit=3)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert window.retry_after("shared", limit=4000) > 0
    assert window.retry_after("shared", limit=4001) == 0


def test_take_checks_and_counts_in_one_step_across_threads() -> None:
    window = FailureWindow(600, clock=Clock())
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


def test_give_back_uncounts_the_latest_failure_only() -> None:
    window = FailureWindow(600, clock=Clock())
    window.failed("key")
    window.failed("key")
    window.give_back("key")
    assert window.retry_after("key", limit=1) > 0
    window.give_back("key")
    window.give_back("key")  # nothing left: no error
    assert window.retry_after("key", limit=1) == 0
