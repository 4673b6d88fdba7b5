"""Bulk triage in the dashboard: tick findings in the list, set them to any triage state with
one comment, all or none; as a form post (fast) and in a real headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.server.admin_support import (
    API,
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    bearer,
    event,
    post_events,
    process,
)
from tests.server.dashboard_support import (
    PASSWORD,
    csrf_of,
    log_in_with_password,
    make_user,
    new_browser,
)

EnrolledAgent = Any
CHROMIUM = Path("/usr/bin/chromium")


def three_findings(client: TestClient, agent: EnrolledAgent, token: str) -> list[int]:
    post_events(client, agent.headers, event(TELEGRAM_PROCESS), event(process(77)),
                event(TELEGRAM_DEB))
    items = client.get(f"{API}/findings", headers=bearer(token)).json()["items"]
    # The two processes, then the install.
    processes = sorted(item["id"] for item in items if item["sensor"] == "process")
    return [*processes, *(item["id"] for item in items if item["sensor"] == "installed")]


def triage_states(client: TestClient, token: str) -> dict[int, tuple[str, str | None]]:
    items = client.get(f"{API}/findings", headers=bearer(token)).json()["items"]
    return {item["id"]: (item["triage"], item["triage_by_name"]) for item in items}


def test_an_analyst_triages_several_ticked_findings_at_once(
    app: FastAPI, client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent,
    db: sessionmaker[Session],
) -> None:
    first, second, third = three_findings(client, enrolled_agent, admin_token)
    make_user(db, "alice", "analyst")
    browser = new_browser(app)
    assert log_in_with_password(browser, "alice", PASSWORD).status_code == 303
    page = browser.get("/findings", params={"app": "telegram"}).text
    assert 'id="bulk-triage"' in page and f'name="ids" value="{first}"' in page
    response = browser.post("/findings/triage", data={
        "csrf_token": csrf_of(page), "ids": [str(first), str(third)],
        "state": "false_positive", "comment": "lab images", "back": "/findings?app=telegram"})
    assert response.status_code == 303
    assert response.headers["location"] == "/findings?app=telegram&notice=triaged&count=2"
    assert "Triage saved for 2 findings." in browser.get(response.headers["location"]).text
    states = triage_states(client, admin_token)
    # People by name: alice, not user:1:alice.
    assert states[first] == states[third] == ("false_positive", "alice")
    assert states[second] == ("new", None)
    # An unknown id among them: nothing changes.
    refused = browser.post("/findings/triage", data={
        "csrf_token": csrf_of(page), "ids": [str(second), "999999"], "state": "excepted"})
    assert refused.status_code == 404
    assert triage_states(client, admin_token)[second] == ("new", None)
    # A viewer sees no boxes and may not post.
    make_user(db, "victor", "viewer")
    viewer = new_browser(app)
    log_in_with_password(viewer, "victor", PASSWORD)
    listing = viewer.get("/findings").text
    assert 'id="bulk-triage"' not in listing
    assert viewer.post("/findings/triage", data={"csrf_token": csrf_of(
        viewer.get("/").text), "ids": [str(second)], "state": "excepted"}).status_code == 403


@pytest.fixture
def chromium() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.slow
def test_bulk_triage_in_chromium(
    chromium: Any, live_server: str, client: TestClient, admin_token: str,
    enrolled_agent: EnrolledAgent, db: sessionmaker[Session],
    make_secret: Callable[..., str],
) -> None:
    from playwright.sync_api import expect

    first, second, third = three_findings(client, enrolled_agent, admin_token)
    make_user(db, "ana", "analyst")
    context = chromium.new_context(base_url=live_server)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.goto("/login")
    page.fill("#username", "ana")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.goto("/findings?sensor=process")
    expect(page.locator("table.findings tbody tr")).to_have_count(2)
    page.get_by_label(f"Select finding {first}").check()
    page.get_by_label(f"Select finding {second}").check()
    page.select_option("#bulk-state", "excepted")
    page.fill("#bulk-comment", "approved until March")
    page.get_by_role("button", name="Triage ticked").click()
    expect(page).to_have_url(re.compile(r"/findings\?sensor=process&notice=triaged&count=2$"))
    expect(page.locator("#bulk-notice")).to_have_text("Triage saved for 2 findings.")
    expect(page.locator("table.findings tbody tr .triage-excepted")).to_have_count(2)
    states = triage_states(client, admin_token)
    assert states[first] == states[second] == ("excepted", "ana")
    assert states[third] == ("new", None)
    # The finding's page names who, and each action's outcome.
    page.goto(f"/findings/{first}")
    expect(page.locator("#triage-heading + p")).to_contain_text("by ana")
    expect(page.locator("#outcomes")).to_contain_text("notify: no result reported yet")
    assert errors == []
    context.close()
