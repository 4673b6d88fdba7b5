"""The enrollment rate limit over real HTTP: failed enrollments per client address.

A real uvicorn on loopback; the server trusts X-Forwarded-For from loopback
(settings.trusted_proxies, as it would from a load balancer), so a request can come
"from" any address.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI

from agent.state import StateDir
from agent.uplink.client import AgentClient
from agent.uplink.sync import PolicySync, SyncStatus
from server.settings import ServerSettings
from server.throttling import EnrollThrottle
from tests.server.admin_support import assert_error
from tests.server.test_dashboard_parts import Clock

LIMIT = 3
WINDOW = 120.0
ENROLL = "/api/v1/agent/enroll"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url,
                          enroll_failures_per_address=LIMIT,
                          enroll_failure_window_seconds=WINDOW,
                          trusted_proxies=["127.0.0.1"])


@pytest.fixture
def clock(app: FastAPI) -> Clock:
    clock = Clock()
    context = app.state.context
    context.enroll_throttle = EnrollThrottle(context.write_sessions, LIMIT, WINDOW, clock=clock)
    return clock


def enroll(url: str, secret: str, facts: dict[str, Any],
           address: str = "203.0.113.7") -> requests.Response:
    return requests.post(f"{url}{ENROLL}", json=facts, timeout=10,
                         headers={"Authorization": f"Bearer {secret}",
                                  "X-Forwarded-For": address})


def test_failed_enrollments_are_limited_per_address_even_for_the_right_secret(
    live_server: str, clock: Clock, enroll_secret: str, host_facts: Callable[..., Any]
) -> None:
    for _ in range(LIMIT):
        assert_error(enroll(live_server, "wen_guess", host_facts()), 401)
        clock.now += 1
    # Past the limit even the right secret is refused, or the limit would not slow guessing.
    refused = enroll(live_server, enroll_secret, host_facts())
    assert_error(refused, 429, "too_many_requests")
    assert int(refused.headers["Retry-After"]) == math.ceil(WINDOW - LIMIT)
    # Refusals are not failures: they do not push the wait further out.
    assert int(enroll(live_server, "wen_guess", host_facts()).headers["Retry-After"]) == \
        math.ceil(WINDOW - LIMIT)
    # Another address is not held back by this one's failures.
    assert enroll(live_server, enroll_secret, host_facts(), "198.51.100.1").status_code == 201
    clock.now += WINDOW - LIMIT + 0.5  # only the first failure aged out: one more try
    assert enroll(live_server, enroll_secret, host_facts()).status_code == 201
    assert_error(enroll(live_server, "wen_guess", host_facts()), 401)
    assert_error(enroll(live_server, enroll_secret, host_facts()), 429)


def test_a_whole_site_behind_one_nat_enrolls_however_many_machines_it_has(
    live_server: str, clock: Clock, enroll_secret: str, host_facts: Callable[..., Any]
) -> None:
    for _ in range(10 * LIMIT):
        assert enroll(live_server, enroll_secret, host_facts()).status_code == 201
    # Successes neither count nor launder failures: the limit is untouched.
    for _ in range(LIMIT):
        assert_error(enroll(live_server, "wen_guess", host_facts()), 401)
    assert_error(enroll(live_server, enroll_secret, host_facts()), 429)


def test_the_agent_backs_off_for_at_least_retry_after_and_then_enrolls(
    tmp_path: Path, live_server: str, clock: Clock, enroll_secret: str
) -> None:
    for _ in range(LIMIT):
        assert_error(enroll(live_server, "wen_guess", {}, address="127.0.0.1"), 401)
    status = SyncStatus()
    sync = PolicySync(AgentClient(live_server, timeout=10), StateDir(tmp_path / "state"),
                      facts=lambda: {"hostname": "desk-9", "machine_id": "m-9", "os": "linux",
                                     "os_version": "6", "arch": "x86_64",
                                     "agent_version": "1", "user": ""},
                      enroll_secret=lambda: enroll_secret, apply_bundle=lambda bundle: None,
                      agent_status=dict, status=status, rng=random.Random(7))
    delay = sync._attempt()
    assert "429" in (status.last_error or "") and not status.enrolled
    assert delay >= WINDOW - LIMIT  # the server's Retry-After is the floor of the backoff
    clock.now += WINDOW
    sync._attempt()
    assert status.enrolled and sync.state.load_identity() is not None
