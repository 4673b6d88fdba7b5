"""The agent's own watchdog backs off when it uses too much CPU and recovers when healthy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.health import HealthState, MiB, Sample, SelfWatchdog


def replay(samples: list[Sample]) -> Iterator[Sample]:
    yield from samples


def watchdog_over(cpu: list[float], rss: int = 50 * MiB, **kwargs: float) -> list[HealthState]:
    samples = replay([Sample(value, rss) for value in cpu])
    dog = SelfWatchdog(cpu_limit_percent=5.0, rss_limit_bytes=150 * MiB, window=3,
                       sampler=lambda: next(samples), **kwargs)
    return [dog.check() for _ in cpu]


@pytest.mark.parametrize(("cpu", "factors"), [
    # Healthy all along: no backoff.
    ([1, 2, 1, 0], [1, 1, 1, 1]),
    # One spike is not a trend.
    ([1, 30, 1, 30, 1], [1, 1, 1, 1, 1]),
    # Three hot samples in a row double the backoff, three more double it again.
    ([9, 9, 9, 9, 9, 9], [1, 1, 2, 2, 2, 4]),
    # It stops at 8x however long the agent stays hot.
    ([9] * 15, [1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8]),
    # Healthy samples in a row halve it back.
    ([9, 9, 9, 9, 9, 9, 1, 1, 1, 1, 1, 1], [1, 1, 2, 2, 2, 4, 4, 4, 2, 2, 2, 1]),
    # Exactly at the limit is within it.
    ([5, 5, 5], [1, 1, 1]),
])
def test_backoff_follows_consecutive_samples(cpu: list[float], factors: list[float]) -> None:
    assert [state.backoff_factor for state in watchdog_over(cpu)] == factors


def test_state_reports_the_sample_and_why_it_is_over_the_limit() -> None:
    states = watchdog_over([9, 9, 9, 1])
    assert states[0] == HealthState(9, 50 * MiB, True, 1.0, "CPU 9.0% over the 5% limit")
    assert states[2].detail == "CPU 9.0% over the 5% limit; scanning 2x less often"
    assert states[3].over_limit is False and states[3].detail == "scanning 2x less often"
    assert states[3].as_dict()["backoff_factor"] == 2.0


def test_memory_over_the_limit_is_flagged_but_does_not_slow_scanning() -> None:
    states = watchdog_over([1, 1, 1, 1], rss=200 * MiB)
    assert all(state.over_limit for state in states)
    assert all(state.backoff_factor == 1.0 for state in states)
    assert states[0].detail == "RSS 200 MiB over the 150 MiB limit"


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        SelfWatchdog(window=0, sampler=lambda: Sample(0, 0))


def test_a_real_check_of_this_process() -> None:
    dog = SelfWatchdog()
    sum(range(200_000))  # some CPU time between the two measurements
    state = dog.check()
    assert state.rss_bytes > 1 * MiB
    assert state.cpu_percent >= 0
    assert state.backoff_factor == 1.0
    assert state.over_limit == (state.cpu_percent > 5.0 or state.rss_bytes > 150 * MiB)


@pytest.mark.skipif(os.name != "posix", reason="POSIX niceness")
def test_lower_priority_nices_the_process_to_ten() -> None:
    # In a child, so the test run itself keeps its priority.
    code = ("import os\nfrom agent.health import lower_priority\n"
            "print(lower_priority(), os.nice(0))\n"
            "print(lower_priority(), os.nice(0))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    expected = str(max(10, os.nice(0)))  # a process niced further already stays so
    assert result.stdout.split() == ["True", expected, "True", expected]

