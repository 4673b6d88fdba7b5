"""Two `warden server run` processes on one PostgreSQL behave as one server.

Rate limits and logouts live in the database: failed enrollments and failed
dashboard logins alternating between the two processes reach the limit at
the same count as on one process, and a session logged out at one process is
refused at the other. (`servers` starts the second from a copy of the first's
data directory, as test_scale_out does: the same signing key, hence the same
session-cookie key.)
"""

from __future__ import annotations

import html
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import WardenServer
from tests.e2e.pg_control import base_url, fresh_database
from tests.e2e.test_scale_out import SecondServer

# Two servers start per test: on a busy 2-core machine that alone may take a minute.
pytestmark = pytest.mark.timeout(360)

ENROLL_LIMIT = 4
LOGIN_LIMIT = 5  # per account, the dashboard's default
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[WardenServer, WardenServer]]:
    cluster = base_url()
    if cluster is None:
        pytest.skip("several server processes share PostgreSQL: set WARDEN_TEST_DATABASE_URL")
    with fresh_database(cluster, prefix="warden_shared") as url:
        first = WardenServer(tmp_path / "a", tmp_path / "a.log", env={
            "WARDEN_DATABASE_URL": url,
            "WARDEN_ENROLL_FAILURES_PER_ADDRESS": str(ENROLL_LIMIT)})
        # Two processes importing and building the app at once, on a busy machine.
        first.startup_timeout = 120.0
        second = SecondServer(first, tmp_path / "b", tmp_path / "b.log")
        try:
            first.start()
            second.start()
            yield first, second
        finally:
            for server in (first, second):
                if server.process is not None:
                    server.stop(signal.SIGKILL)


def enroll(server: WardenServer, secret: str) -> requests.Response:
    facts = {"hostname": "desk", "machine_id": "m-1", "os": "linux", "os_version": "12",
             "arch": "x86_64", "agent_version": "0.1.0", "user": "u"}
    return requests.post(f"{server.url}/api/v1/agent/enroll", json=facts, timeout=10,
                         headers={"Authorization": f"Bearer {secret}"})


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


def token_login(server: WardenServer, token: str) -> tuple[int, requests.Session]:
    """Log in to the dashboard with an API token from a fresh browser; the status."""
    browser = requests.Session()
    page = browser.get(f"{server.url}/login", timeout=10)
    response = browser.post(f"{server.url}/login", timeout=10, allow_redirects=False, data={
        "csrf_token": csrf_of(page.text), "method": "token", "token": token, "next": "/"})
    return response.status_code, browser


def test_failed_enrollments_alternating_between_processes_reach_the_limit_as_on_one(
    pair: tuple[WardenServer, WardenServer],
) -> None:
    first, second = pair
    servers = [first, second]
    for attempt in range(ENROLL_LIMIT):
        assert enroll(servers[attempt % 2], "wen_guess").status_code == 401, attempt
    # Past the limit, at either process, even the right secret waits.
    for server in servers:
        refused = enroll(server, first.enroll_secret)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) > 0


def test_failed_logins_alternating_between_processes_reach_the_limit_as_on_one(
    pair: tuple[WardenServer, WardenServer],
) -> None:
    first, second = pair
    statuses = [token_login((first, second)[attempt % 2], "wat_wrong")[0]
                for attempt in range(LOGIN_LIMIT + 1)]
    assert statuses == [401] * LOGIN_LIMIT + [429]
    assert token_login(second, first.admin_token)[0] == 429  # the account waits everywhere


def test_a_logout_at_one_process_is_refused_at_the_other(
    pair: tuple[WardenServer, WardenServer],
) -> None:
    first, second = pair
    status, browser = token_login(first, first.admin_token)
    assert status == 303
    cookie = dict(browser.cookies)["warden_session"]

    def overview(server: WardenServer) -> int:
        return requests.get(f"{server.url}/", cookies={"warden_session": cookie},
                            timeout=10, allow_redirects=False).status_code

    assert overview(first) == 200 and overview(second) == 200
    page = browser.get(f"{first.url}/", timeout=10)
    logout = browser.post(f"{first.url}/logout", data={"csrf_token": csrf_of(page.text)},
                          timeout=10, allow_redirects=False)
    assert logout.status_code == 303, logout.text
    # The same cookie, replayed: refused at the process that logged it out and the other.
    assert overview(second) in (302, 303, 307)
    assert overview(first) in (302, 303, 307)
