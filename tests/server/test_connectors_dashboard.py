"""The MDM connectors page in headless Chromium: each connector's last sync, its result and
its last error, and "Sync now" (the real server on loopback, a stand-in MDM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from server.settings import ServerSettings
from server.store import users
from tests.server.mdm_standins import (
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    App,
    Device,
    StandIn,
    running,
)

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
PASSWORD = "connector page password"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"),
]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url,
                          connector_poll_seconds=3600)


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with running(StandIn()) as server:
        server.devices = [Device("d1", "alice-iphone", "iOS",
                                 apps=[App("Telegram", None, "Telegram FZ-LLC")])]
        yield server


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_the_page_shows_each_connectors_last_sync_result_and_error(
        live_server: str, admin_token: str, standin: StandIn, browser: Any,
        db: sessionmaker[Session]) -> None:
    with db() as session:
        users.create(session, username="ada", password=PASSWORD, role="admin", actor="test")
        session.commit()
    admin = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=live_server, headers=admin, timeout=60) as api:
        for name, secret in (("good", CLIENT_SECRET), ("wrong", "not the secret")):
            added = api.post("/api/v1/connectors", json={
                "name": name, "kind": "intune", "tenant_id": TENANT, "client_id": CLIENT_ID,
                "secret": secret, "graph_url": standin.url, "login_url": standin.url})
            assert added.status_code == 201, added.text
        assert api.post("/api/v1/connectors/good/sync").status_code == 200
        assert api.post("/api/v1/connectors/wrong/sync").status_code == 502

    context = browser.new_context(base_url=live_server)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.goto("/connectors")
    page.fill("#username", "ada")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page).to_have_url(f"{live_server}/connectors")
    expect(page.get_by_role("link", name="MDM connectors")).to_have_attribute(
        "aria-current", "page")

    good = page.locator('tr[data-connector="good"]')
    wrong = page.locator('tr[data-connector="wrong"]')
    expect(good.locator("td.result")).to_contain_text("ok")
    expect(good.locator("td.result")).to_contain_text("1 devices, 1 apps; 1 opened, 0 resolved")
    expect(wrong.locator("td.result")).to_contain_text("failed")
    expect(wrong.locator("td.error")).to_contain_text("refused the credentials")
    assert CLIENT_SECRET not in page.content()

    # Sync now: the MDM lost the app, the finding resolves, the page says so.
    standin.devices[0].apps = []
    good.get_by_role("button", name="Sync now good").click()
    expect(page).to_have_url(f"{live_server}/connectors")
    expect(page.locator('tr[data-connector="good"] td.result')).to_contain_text(
        "1 devices, 0 apps; 0 opened, 1 resolved")
    assert errors == []
    context.close()
