"""Violations, compliance over time and the report in a real headless Chromium against a real
`warden server run` process.

Two machines report Telegram through the agent API, as agents do; an analyst
finds one machine's violation in the list, opens it, sees its findings beneath,
triages it (and the findings follow), downloads the list as CSV; the overview
shows the compliance trend from the server's own daily snapshot, and the
compliance report downloads as a PDF whose text is read back.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pypdf import PdfReader

from tests.agent.conftest import wait_for
from tests.e2e.conftest import WardenServer
from tests.e2e.test_dashboard_browser import (
    CHROMIUM,
    add_user,
    log_in,
    open_page,
)

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [
    pytest.mark.slow,
    # A server process, two machines and a browser: minutes on a loaded shared machine.
    pytest.mark.timeout(600),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from tests.e2e.test_dashboard_browser import CHROMIUM_ARGS

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def report_telegram(server: WardenServer, hostname: str, launches: int) -> None:
    """Enroll a machine and send what its agent would: Telegram launched and installed."""
    facts = {"hostname": hostname, "machine_id": uuid.uuid4().hex, "os": "linux",
             "os_version": "Debian 12", "arch": "x86_64", "agent_version": "0.1.0",
             "user": "olena"}
    enrolled = requests.post(f"{server.url}/api/v1/agent/enroll", json=facts, timeout=10,
                             headers={"Authorization": f"Bearer {server.enroll_secret}"})
    assert enrolled.status_code == 201, enrolled.text
    now = dt.datetime.now(dt.UTC).isoformat()

    def opened(sensor: str, key: str, evidence: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "type": "finding_opened", "time": now,
                "finding": {"key": key, "app": "telegram", "sensor": sensor, "verdict": "deny",
                            "action": "notify", "alternative": "signal", "evidence": evidence}}

    events = [opened("process", f"telegram|process|{pid}",
                     {"pid": pid, "exe": "/usr/bin/telegram-desktop"})
              for pid in range(100, 100 + launches)]
    events.append(opened("installed", "telegram|installed|deb", {"source": "deb",
                                                                 "id": "telegram-desktop"}))
    answer = requests.post(f"{server.url}/api/v1/agent/events", json={"events": events},
                           timeout=10,
                           headers={"Authorization": f"Bearer {enrolled.json()['agent_token']}"})
    assert answer.status_code == 200, answer.text


def test_review_violations_trend_and_report_in_chromium(
    server: WardenServer, chromium: Any, tmp_path: Path
) -> None:
    add_user(server, "ana", "analyst")
    report_telegram(server, "desk-17", launches=3)
    report_telegram(server, "press-02", launches=1)
    [violation] = server.api("violations", params={"host": "desk-17"})["items"]

    page, console_errors = open_page(chromium, server)
    page.goto("/violations")
    log_in(page, "ana")
    expect(page).to_have_url(f"{server.url}/violations")
    expect(page.get_by_role("link", name="Violations", exact=True)).to_have_attribute(
        "aria-current", "page")
    rows = page.locator("table.violations tbody tr")
    expect(rows).to_have_count(2)
    page.fill("#f-host", "desk-*")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(re.compile(r"host=desk-"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("process: 3")
    filtered_url = page.url

    # -- the violation, its findings beneath, and triage for all of them ------------------
    page.locator(f'a[aria-label^="Violation {violation["id"]}:"]').click()
    expect(page.locator("h1")).to_contain_text("Telegram on desk-17")
    expect(page.locator("#evidence tbody tr")).to_have_count(4)
    comment = "Spoke to Olena: uninstalling today, Signal set up."
    page.select_option("#triage-state", "acknowledged")
    page.fill("#triage-comment", comment)
    page.get_by_role("button", name="Save triage").click()
    expect(page.get_by_role("status")).to_contain_text("Triage saved")
    expect(page.locator("blockquote.comment")).to_have_text(comment)
    expect(page.locator("#evidence tbody tr").first).to_contain_text("acknowledged")
    evidence = server.api(f"violations/{violation['id']}")["findings"]
    assert {(item["triage"], item["triage_comment"]) for item in evidence} == {
        ("acknowledged", comment)}
    # A finding is still one click away.
    page.locator("#evidence a").first.click()
    expect(page).to_have_url(re.compile(r"/findings/\d+$"))

    # -- the list's filter as CSV ---------------------------------------------------------
    page.goto(filtered_url)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="CSV").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert [(row["host"], row["triage"]) for row in exported] == [("desk-17", "acknowledged")]

    # -- the overview's trend, from the server's own daily snapshot --------------------------
    wait_for(lambda: server.api("compliance/history", params={"days": 1})["points"], 60,
             "the server's first daily snapshot")
    page.goto("/")
    expect(page.locator("#compliance-trend svg.chart")).to_be_visible()
    expect(page.locator("#compliance-trend circle.chart-dot")).to_have_count(1)

    # -- the compliance report, downloaded and read back -------------------------------------
    page.select_option("#r-format", "pdf")
    page.fill("#r-days", "7")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download report").click()
    pdf_path = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(pdf_path)
    assert pdf_path.suffix == ".pdf"
    text = "\n".join(sheet.extract_text() for sheet in PdfReader(pdf_path).pages)
    assert "0 of 2 machines compliant" in text
    assert "desk-17" in text and "press-02" in text and "acknowledged" in text

    assert console_errors == []
