"""The dashboard's violations list and page, in process over a real database.

Findings come from real agent events; each person logs in through the login form.
Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL. The same flow in a
real Chromium is in tests/e2e/test_review_browser.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.db import utcnow
from server.models import Finding, Violation
from tests.server.admin_support import TELEGRAM_DEB, event, post_events, process
from tests.server.dashboard_support import PeopleFactory, csrf_of, people, post_form

EnrolledAgent = Any
DB = sessionmaker[Session]


@pytest.fixture
def person(app: FastAPI, client: TestClient, api_token: Callable[..., str]) -> PeopleFactory:
    return people(app, api_token)


@pytest.fixture
def violation_id(client: TestClient, enroll: Callable[..., EnrolledAgent], db: DB,
                 make_secret: Callable[..., str]) -> int:
    """Telegram on desk-01 (two launches and the install), and on press-01 in group press."""
    desk = enroll(hostname="desk-01")
    post_events(client, desk.headers, event(process(1), time=utcnow()),
                event(process(2), time=utcnow()), event(TELEGRAM_DEB, time=utcnow()))
    press = enroll(hostname="press-01", secret=make_secret(group="press"))
    post_events(client, press.headers, event(process(3), time=utcnow()))
    with db() as session:
        return session.scalars(sa.select(Violation.id).where(
            Violation.agent_id == desk.agent_id)).one()


@pytest.mark.parametrize("role", ["viewer", "analyst"])
def test_the_review_list_is_the_violations_list(
    role: str, person: PeopleFactory, violation_id: int
) -> None:
    browser = person(role)
    page = browser.get("/violations")
    assert page.status_code == 200, page.text
    assert 'href="/violations"' in page.text and "2</strong> violations match" in page.text
    assert f'aria-label="Violation {violation_id}: Telegram on desk-01"' in page.text
    assert "process: 2" in page.text and "installed: 1" in page.text
    only_press = browser.get("/violations", params={"group": "press"}).text
    assert "press-01" in only_press and "desk-01</a>" not in only_press
    bad = browser.get("/violations", params={"since": "last tuesday"})
    assert bad.status_code == 400 and 'id="f-since-error"' in bad.text
    detail = browser.get(f"/violations/{violation_id}").text
    assert "Telegram on desk-01" in detail
    # The evidence beneath: each finding, linked to its own page.
    assert detail.count('aria-label="Finding ') == 3
    assert ('id="triage-form"' in detail) == (role == "analyst")
    assert browser.get("/violations/424242").status_code == 404


def test_an_analyst_triages_a_violation_and_its_findings_follow(
    person: PeopleFactory, violation_id: int, db: DB
) -> None:
    analyst = person("analyst")
    answer = post_form(analyst, f"/violations/{violation_id}/triage",
                       {"state": "excepted", "comment": "Press office, approved by CISO"},
                       csrf_from=f"/violations/{violation_id}")
    assert answer.status_code == 303
    page = analyst.get(answer.headers["location"]).text
    assert "Triage saved" in page and "Press office, approved by CISO" in page
    with db() as session:
        row = session.get(Violation, violation_id)
        assert row is not None and row.triage == "excepted"
        states = set(session.scalars(sa.select(Finding.triage).where(
            Finding.agent_id == row.agent_id)))
    assert states == {"excepted"}
    assert post_form(analyst, f"/violations/{violation_id}/triage", {"state": "meh"},
                     csrf_from=f"/violations/{violation_id}").status_code == 400


def test_a_viewer_cannot_triage_a_violation(
    person: PeopleFactory, violation_id: int, db: DB
) -> None:
    viewer = person("viewer")
    page = viewer.get(f"/violations/{violation_id}").text
    refused = viewer.post(f"/violations/{violation_id}/triage",
                          data={"csrf_token": csrf_of(page), "state": "resolved"})
    assert refused.status_code == 403
    with db() as session:
        row = session.get(Violation, violation_id)
        assert row is not None and row.triage == "new"


def test_the_list_downloads_as_csv(person: PeopleFactory, violation_id: int) -> None:
    browser = person("viewer")
    response = browser.get("/violations/export.csv", params={"host": "desk-*"})
    assert response.status_code == 200
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert row["host"] == "desk-01" and row["id"] == str(violation_id)
    assert browser.get("/violations/export.csv", params={"status": "x"}).status_code == 400


def test_the_overview_shows_the_trend_and_the_report_downloads(
    app: FastAPI, person: PeopleFactory, violation_id: int, db: DB
) -> None:
    from pypdf import PdfReader

    from server.store import compliance

    app.state.compliance_task.shutdown()  # the snapshot is taken below, on demand
    browser = person("viewer")
    assert "No daily snapshot yet" in browser.get("/").text
    with db() as session:
        compliance.take_snapshot(session, utcnow(), app.state.context.settings.silent_after)
        session.commit()
    overview = browser.get("/").text
    assert 'id="compliance-trend"' in overview and 'class="chart-dot"' in overview
    assert "0% compliant" in overview  # both machines have Telegram open
    assert '<option value="press">press</option>' in overview
    pdf = browser.get("/reports/compliance", params={"format": "pdf", "group": "press",
                                                     "days": "7"})
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Group press" in text and "press-01" in text and "desk-01" not in text
    bad = browser.get("/reports/compliance", params={"format": "doc", "days": "0"})
    assert bad.status_code == 400 and "format" in bad.text and "days" in bad.text
