"""Exceptions in a real headless Chromium, against a real server and a real agent process:
one click on a finding allows the app on that machine (the agent then reports it as
excepted); a request made at the machine with `warden-agent request-exception` shows as
pending and is approved with one click, and the person is told."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import BIN, AgentProcess, WardenServer
from tests.e2e.test_dashboard_browser import (
    CHROMIUM,
    SYNC,
    add_user,
    chromium,
    log_in,
    open_page,
    telegram_finding,
)

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

__all__ = ["chromium"]  # the module-scoped browser fixture, shared

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"),
]


def test_allow_from_a_finding_and_approve_a_request_in_chromium(
        server: WardenServer, make_agent: Any, fake: FakeProcesses, chromium: Any,
        tmp_path: Path) -> None:
    add_user(server, "root-admin", "admin")
    socket_path = tmp_path / "run" / "request.sock"
    agent: AgentProcess = make_agent(request_socket=str(socket_path))
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")
    telegram = fake.start("telegram-desktop")
    finding = wait_for(lambda: telegram_finding(server, telegram.pid), SYNC,
                       "the agent's Telegram finding on the server")
    assert finding["verdict"] == "deny"

    page, console_errors = open_page(chromium, server)
    page.goto(f"/findings/{finding['id']}")
    log_in(page, "root-admin")
    expect(page).to_have_url(re.compile(rf"/findings/{finding['id']}$"))
    page.get_by_role("button", name="Allow telegram on this machine for 30 days").click()
    expect(page).to_have_url(re.compile(rf"/findings/{finding['id']}\?notice="))
    expect(page.get_by_role("status")).to_contain_text("Exception granted")

    page.goto("/exceptions")
    row = page.locator("#active-exceptions tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(finding["host"])
    # The agent takes it at its next check-in and reports the running app as excepted.
    wait_for(lambda: (item := telegram_finding(server, telegram.pid))
             and item["verdict"] == "excepted", SYNC, "the finding reported as excepted")
    assert telegram.poll() is None

    # A person at the machine asks for longer; an administrator approves with one click,
    # and the exception in force is extended, not doubled.
    asked = subprocess.run(
        [str(BIN / "warden-agent"), "request-exception", "--app", "telegram", "--days", "90",
         "--reason", "the embassy only answers there", "--socket", str(socket_path)],
        capture_output=True, text=True, timeout=60, env=agent.env)
    assert asked.returncode == 0, asked.stderr

    def pending_row() -> Any:
        page.goto("/exceptions")
        rows = page.locator("#pending-requests tbody tr")
        return rows if rows.count() == 1 else None

    rows = wait_for(pending_row, SYNC, "the request pending in the dashboard")
    expect(rows).to_contain_text("telegram")
    expect(rows).to_contain_text("the embassy only answers there")
    page.get_by_role("button", name=re.compile(r"^Approve")).click()
    expect(page.get_by_role("status")).to_contain_text("Request approved")
    expect(page.locator("#pending-requests")).to_have_count(0)
    expect(page.locator("#decided-requests")).to_contain_text("approved")
    expect(page.locator("#active-exceptions tbody tr")).to_have_count(1)
    wait_for(lambda: any("Telegram is allowed on this computer" in " ".join(notice)
                         for notice in agent.notices()), SYNC, "the person told the answer")

    # A bad grant from the form: the page says which field, nothing is stored.
    page.fill("#grant-app", "no-such-app")
    page.fill("#grant-host", finding["host"])
    page.fill("#grant-reason", "x")
    page.get_by_role("button", name="Grant", exact=True).click()
    expect(page.locator("#grant-error")).to_contain_text("app: unknown app")
    expect(page.locator("#active-exceptions tbody tr")).to_have_count(1)
    # The refused form is answered 422 on purpose (the browser logs the status); nothing else.
    assert [error for error in console_errors if "status of 422" not in error] == []
