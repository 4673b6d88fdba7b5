"""The dashboard in a real headless Chromium (Playwright) against a real server and agent.

`warden server run` and `warden-agent run` are real processes (tests/e2e/conftest.py);
a copy of `sleep` runs as `telegram-desktop`, the agent reports it, and people
review it in the browser: log in, filter to it, acknowledge it with a comment,
export the filter as CSV and read it back. An analyst does not see the policy
upload form and is refused when posting to it; a viewer cannot triage.

The second test fills the server with a month of a believable fleet and takes
the screenshots in docs/screenshots/ (written there when WARDEN_SCREENSHOTS_DIR
names that folder; to tmp_path otherwise, and checked either way).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.host.machine import MachineKey
from server import db
from server.store import users
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer
from tests.e2e.dashboard_fleet import POLICY_V2, FleetSeeder, make_silent

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PASSWORD = "review board password"
SYNC = 45.0  # enrollment + check-in (5 s) + upload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def add_user(server: WardenServer, username: str, role: str) -> None:
    """A dashboard account, written straight into the server's database (as the CLI does)."""
    engine = db.create_engine(f"sqlite:///{server.data_dir / 'warden.db'}")
    try:
        with db.session_factory(db.writer(engine))() as session:
            users.create(session, username=username, password=PASSWORD, role=role,
                         actor="test")
            session.commit()
    finally:
        engine.dispose()


def open_page(chromium: Any, server: WardenServer) -> tuple[Any, list[str]]:
    """A fresh browser profile's page, and the console errors it logs (CSP violations...)."""
    context = chromium.new_context(base_url=server.url, accept_downloads=True,
                                   viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    return page, errors


def log_in(page: Any, username: str) -> None:
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()


def csrf_token(page: Any) -> str:
    token: str = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    return token


def telegram_finding(server: WardenServer, pid: int) -> dict[str, Any] | None:
    for item in server.findings(app="telegram", sensor="process"):
        if item["evidence"].get("pid") == pid:
            return item
    return None


def test_review_a_real_agents_finding_in_chromium(
    server: WardenServer, make_agent: Any, fake: FakeProcesses, chromium: Any, tmp_path: Path
) -> None:
    add_user(server, "ana", "analyst")
    agent: AgentProcess = make_agent()
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")
    telegram = fake.start("telegram-desktop")
    finding = wait_for(lambda: telegram_finding(server, telegram.pid), SYNC,
                       "the agent's Telegram finding on the server")
    host, finding_id = finding["host"], finding["id"]

    # -- an analyst logs in and filters to the finding ---------------------------------
    page, console_errors = open_page(chromium, server)
    page.goto("/findings")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ffindings$"))
    log_in(page, "ana")
    expect(page).to_have_url(f"{server.url}/findings")
    page.fill("#f-host", host)
    page.select_option("#f-app", "telegram")
    page.select_option("#f-status", "open")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(re.compile(r"app=telegram"))
    filtered_url = page.url
    rows = page.locator("table.findings tbody tr")
    expected = server.findings(app="telegram", host=host, status="open")
    expect(rows).to_have_count(len(expected))
    row = page.locator("tr", has=page.locator(f'a[aria-label^="Finding {finding_id}:"]'))
    expect(row).to_contain_text(f"pid {telegram.pid}")
    expect(row).to_contain_text("deny")

    # -- the detail, then acknowledge it with a comment ---------------------------------
    row.locator(f'a[aria-label^="Finding {finding_id}:"]').click()
    expect(page.locator("h1")).to_contain_text(f"Telegram on {host}")
    expect(page.locator("#instead-heading + ul")).to_contain_text("Signal")
    expect(page.locator('a[href="https://signal.org/download/"]').first).to_be_visible()
    expect(page.locator(".timeline")).to_contain_text("opened")
    comment = f"Asked the owner of {host} to quit Telegram; moving to Signal."
    page.select_option("#triage-state", "acknowledged")
    page.fill("#triage-comment", comment)
    page.get_by_role("button", name="Save triage").click()
    expect(page.get_by_role("status")).to_have_text("Triage saved.")
    expect(page.locator("blockquote.comment")).to_have_text(comment)

    # -- export the filter as CSV and read it back ----------------------------------------
    page.goto(filtered_url)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    # Exactly the filter's rows: this host's open Telegram findings. (The set is read
    # again: any other Telegram-named process on this machine opens and resolves its own.)
    assert {(item["host"], item["app"], item["status"]) for item in exported} == {
        (host, "telegram", "open")}
    now_open = {str(item["id"]) for item in server.findings(app="telegram", host=host,
                                                            status="open")}
    assert {item["id"] for item in exported} <= now_open | {str(item["id"]) for item in expected}
    [mine] = [item for item in exported if item["id"] == str(finding_id)]
    assert (mine["host"], mine["app"], mine["status"]) == (host, "telegram", "open")
    assert (mine["triage"], mine["triage_comment"]) == ("acknowledged", comment)
    assert mine["triage_by"] == "user:" + mine["triage_by"].split(":", 1)[1]
    assert str(telegram.pid) in mine["evidence"]

    # -- the analyst has no policy upload form, and posting to it is refused -------------
    page.goto("/policies")
    expect(page.locator("h1")).to_have_text("Policies")
    expect(page.locator("#upload-form")).to_have_count(0)
    expect(page.get_by_text("Upload a new version")).to_have_count(0)
    refused = page.request.post(f"{server.url}/policies/upload",
                                multipart={"csrf_token": csrf_token(page), "source": POLICY_V2})
    assert refused.status == 403
    assert "needs the admin role" in refused.text()
    assert len(server.api("policies")["items"]) == 1

    # -- a viewer (logging in with an API token) cannot triage -------------------------
    token = server.api("tokens", "POST", json={"name": "vic", "role": "viewer"})["token"]
    viewer, viewer_errors = open_page(chromium, server)
    viewer.goto("/login")
    viewer.fill("#token", token)
    viewer.get_by_role("button", name="Log in with token").click()
    expect(viewer.locator("h1")).to_have_text("Overview")
    viewer.goto(f"/findings/{finding_id}")
    expect(viewer.locator("#triage-form")).to_have_count(0)
    expect(viewer.locator("blockquote.comment")).to_have_text(comment)
    attempt = viewer.request.post(f"{server.url}/findings/{finding_id}/triage",
                                  form={"csrf_token": csrf_token(viewer),
                                        "state": "false_positive", "comment": "not me"})
    assert attempt.status == 403
    after = server.api(f"findings/{finding_id}")
    assert (after["triage"], after["triage_comment"]) == ("acknowledged", comment)

    # Styles and script loaded under the Content-Security-Policy, nothing refused.
    assert console_errors == [] and viewer_errors == []


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[WardenServer]:
    """A server with the production check-in interval, so "silent" reads as it would."""
    warden = WardenServer(tmp_path / "demo", tmp_path / "demo.log",
                          env={"WARDEN_CHECKIN_INTERVAL_SECONDS": "60"})
    warden.start()
    try:
        yield warden
    finally:
        warden.stop()


def test_screenshots_of_overview_findings_and_a_policy_diff(
    demo_server: WardenServer, chromium: Any, tmp_path: Path
) -> None:
    server = demo_server
    out = Path(os.environ.get("WARDEN_SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    add_user(server, "ada", "admin")
    seeder = FleetSeeder(server.url, server.admin_token, dt.datetime.now(dt.UTC))
    seeder.enroll_all()
    seeder.month_of_findings()
    seeder.triage_some()
    v1 = server.api("policies")["items"][0]["version"]

    page, console_errors = open_page(chromium, server)
    page.goto("/login")
    log_in(page, "ada")
    # Upload the second version through the form, check its impact, activate it.
    page.goto("/policies")
    policy_file = tmp_path / "org-messaging.yaml"
    policy_file.write_text(POLICY_V2)
    page.set_input_files("#policy-file", str(policy_file))
    page.get_by_role("button", name="Validate and upload").click()
    expect(page).to_have_url(re.compile(r"/policies/2\?notice=uploaded$"))
    page.get_by_role("link", name="preview its impact").click()
    expect(page.locator("h1")).to_have_text("Impact of activating v2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Activate v2").click()
    expect(page.get_by_role("status")).to_contain_text("now active")
    v2 = server.api("policies")["items"][1]["version"]
    seeder.check_in(current=v2, outdated=v1, stale={"ops-ws-0110", "hr-mb-0004"})
    make_silent(server.data_dir / "warden.db", {"ops-ws-0110", "hr-mb-0004"},
                dt.datetime.now(dt.UTC) - dt.timedelta(days=2))

    page.goto("/")
    expect(page.locator(".alternatives")).to_contain_text("WhatsApp is banned")
    expect(page.locator('rect.chart-bar')).to_have_count(30)
    page.screenshot(path=str(out / "overview.png"), full_page=True)
    page.goto("/findings?status=open")
    expect(page.locator("table.findings tbody tr").first).to_be_visible()
    page.screenshot(path=str(out / "findings.png"))
    page.goto("/policies/diff?from=1&to=2")
    expect(page.locator("table.changes")).to_contain_text("whatsapp")
    page.screenshot(path=str(out / "policy-diff.png"), full_page=True)
    assert console_errors == []

    for name in ("overview.png", "findings.png", "policy-diff.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", data[16:24])
        assert width == 1440 and height >= 900, (name, width, height)


def test_an_admin_revokes_and_readmits_a_host_in_chromium(
    server: WardenServer, chromium: Any
) -> None:
    add_user(server, "ada", "admin")
    enroll = f"{server.url}/api/v1/agent/enroll"
    secret = {"Authorization": f"Bearer {server.enroll_secret}"}
    facts = {"hostname": "fin-lt-0300", "machine_id": uuid.uuid4().hex, "os": "linux",
             "os_version": "Debian 12", "arch": "x86_64", "agent_version": "0.1.0",
             "user": "m.keller"}
    key = MachineKey.generate()  # the machine's own key, as its agent makes one

    def signed() -> dict[str, Any]:
        return {**facts, **key.proof(facts["machine_id"])}

    agent_id = requests.post(enroll, json=signed(), headers=secret, timeout=10).json()[
        "agent_id"]
    host_page = f"{server.url}/hosts/{agent_id}"

    page, console_errors = open_page(chromium, server)
    page.goto(host_page)
    log_in(page, "ada")
    expect(page).to_have_url(host_page)
    asked: list[str] = []

    def answer(accept: bool) -> Callable[[Any], None]:
        def respond(dialog: Any) -> None:
            asked.append(dialog.message)
            if accept:
                dialog.accept()
            else:
                dialog.dismiss()

        return respond

    # Answering "Cancel" to the confirmation sends nothing.
    page.once("dialog", answer(False))
    page.get_by_role("button", name="Revoke agent").click()
    assert asked and asked[0].startswith("Revoke this agent?")
    assert server.api(f"agents/{agent_id}")["state"] == "active"

    page.once("dialog", answer(True))
    page.get_by_role("button", name="Revoke agent").click()
    expect(page.get_by_role("status")).to_contain_text("Agent revoked")
    expect(page.locator("h1 .badge")).to_have_text("revoked")
    assert requests.post(enroll, json=facts, headers=secret, timeout=10).status_code == 403

    page.once("dialog", answer(True))
    page.get_by_role("button", name="Re-admit machine").click()
    expect(page.get_by_role("status")).to_contain_text("Machine re-admitted")
    assert asked[-1].startswith("Re-admit this machine?")
    expect(page.get_by_role("button", name="Revoke agent")).to_be_visible()
    assert server.api(f"agents/{agent_id}")["revoked_at"] is None
    again = requests.post(enroll, json=signed(), headers=secret, timeout=10)
    assert (again.status_code, again.json()["agent_id"]) == (201, agent_id)

    # Someone with the secret and this machine's id, without its key: held, shown, rejected.
    assert requests.post(enroll, json={**facts, "hostname": "intruder"}, headers=secret,
                         timeout=10).status_code == 409
    page.goto(host_page)
    expect(page.get_by_role("heading", name="Re-enrollment awaiting approval")).to_be_visible()
    page.once("dialog", answer(False))
    page.get_by_role("button", name="Approve re-enrollment").click()
    assert asked[-1].startswith("Approve this re-enrollment?")
    assert server.api(f"agents/{agent_id}")["reenrollment"]["approved_at"] is None
    page.once("dialog", answer(True))
    page.get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status")).to_contain_text("Re-enrollment rejected")
    assert asked[-1].startswith("Reject this re-enrollment?")
    assert server.api(f"agents/{agent_id}")["reenrollment"] is None
    assert console_errors == []
