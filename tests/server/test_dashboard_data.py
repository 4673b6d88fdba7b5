"""The dashboard's data pages with real findings: the findings table (filters, sort, pages,
export), hosts, the overview, every kind of evidence. In process, real database.

Findings come from real agent events (tests.server.admin_support), each person is a
TestClient logged in through the login form. Runs on SQLite and, with
WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from agent.host.machine import MachineKey
from policies.observations import InstalledObservation
from server.db import utcnow
from server.models import Finding
from tests.server.admin_support import (
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    connection,
    event,
    post_events,
    process,
)
from tests.server.dashboard_support import PeopleFactory, people, post_form

EnrolledAgent = Any
DB = sessionmaker[Session]


@pytest.fixture
def person(app: FastAPI, client: TestClient, api_token: Callable[..., str]) -> PeopleFactory:
    return people(app, api_token)


@pytest.fixture
def finding_id(client: TestClient, enrolled_agent: EnrolledAgent, db: DB) -> int:
    """One open Telegram finding on desk-01, reported by its agent a minute ago."""
    post_events(client, enrolled_agent.headers, event(TELEGRAM_PROCESS, time=utcnow()))
    with db() as session:
        return session.scalars(sa.select(Finding.id)).one()


def finding_ids(page: str) -> list[int]:
    """The findings a findings-table page lists, in order."""
    return [int(found) for found in re.findall(r'aria-label="Finding (\d+):', page)]


# -- findings: filters, sort, pages, export -------------------------------------------------


@pytest.fixture
def many(client: TestClient, enroll: Callable[..., EnrolledAgent]) -> dict[str, Any]:
    """alice-pc: 52 Telegram processes; bob-pc: Telegram installed (deb) and running; all now."""
    alice, bob = enroll(hostname="alice-pc"), enroll(hostname="bob-pc")
    now = utcnow()
    post_events(client, alice.headers,
                *(event(process(pid), time=now) for pid in range(100, 152)))
    post_events(client, bob.headers, event(TELEGRAM_DEB, time=now),
                event(TELEGRAM_PROCESS, time=now))
    return {"alice": alice, "bob": bob}


def test_the_findings_table_filters_sorts_and_pages(
    person: PeopleFactory, many: dict[str, Any]
) -> None:
    viewer = person("viewer")
    first = viewer.get("/findings")
    assert "<strong>54</strong> findings match" in first.text
    assert len(finding_ids(first.text)) == 50
    next_link = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert next_link is not None
    second = viewer.get(next_link.group(1).replace("&amp;", "&"))
    assert len(finding_ids(second.text)) == 4
    assert not set(finding_ids(first.text)) & set(finding_ids(second.text))

    bob = viewer.get("/findings?host=bob-pc").text
    assert len(finding_ids(bob)) == 2 and "alice-pc</a>" not in bob
    installed = viewer.get("/findings?sensor=installed").text
    assert len(finding_ids(installed)) == 1 and "/usr/bin/telegram-desktop" in installed

    ascending = finding_ids(viewer.get("/findings?order=host&dir=asc").text)
    descending = finding_ids(viewer.get("/findings?order=host&dir=desc").text)
    assert ascending[0] != descending[0]
    assert 'aria-sort="ascending"' in viewer.get("/findings?order=host&dir=asc").text

    bad = viewer.get("/findings?until=yesterday&status=shut")
    assert bad.status_code == 400
    assert 'id="f-until" name="until"' in bad.text
    assert re.search(r'id="f-status" name="status" aria-invalid="true"', bad.text)
    assert "f-until-error" in bad.text


def test_the_to_date_includes_that_whole_day(person: PeopleFactory, finding_id: int) -> None:
    viewer = person("viewer")
    today = utcnow().date()
    assert finding_ids(viewer.get(f"/findings?until={today}").text) == [finding_id]
    assert finding_ids(viewer.get(f"/findings?since={today}&until={today}").text) == [
        finding_id]
    yesterday = today.fromordinal(today.toordinal() - 1)
    assert finding_ids(viewer.get(f"/findings?until={yesterday}").text) == []


def test_exports_follow_the_filter_and_match_the_api_export(
    person: PeopleFactory, client: TestClient, admin_token: str, many: dict[str, Any]
) -> None:
    viewer = person("viewer")
    page = viewer.get("/findings?host=bob-pc&app=telegram").text
    link = re.search(r'href="(/findings/export\.csv[^"]*)"', page).group(1)  # type: ignore[union-attr]
    csv_answer = viewer.get(link.replace("&amp;", "&"))
    assert csv_answer.status_code == 200
    assert csv_answer.headers["content-disposition"].startswith("attachment; filename=")
    api = client.get("/api/v1/findings/export", params={"format": "csv", "host": "bob-pc",
                                                          "app": "telegram"},
                     headers={"Authorization": f"Bearer {admin_token}"})
    assert csv_answer.content == api.content
    lines = csv_answer.text.splitlines()
    assert len(lines) == 3 and all(",bob-pc," in line for line in lines[1:])

    json_answer = viewer.get("/findings/export.json?host=bob-pc")
    api_json = client.get("/api/v1/findings/export", params={"format": "json",
                                                               "host": "bob-pc"},
                          headers={"Authorization": f"Bearer {admin_token}"})
    assert json_answer.json() == api_json.json()
    assert {item["host"] for item in json_answer.json()["items"]} == {"bob-pc"}
    assert viewer.get("/findings/export.csv?status=nope").status_code == 400


# -- hosts and the overview ------------------------------------------------------------------


def test_hosts_list_and_a_host_with_its_installed_banned_app(
    person: PeopleFactory, many: dict[str, Any]
) -> None:
    viewer = person("viewer")
    listing = viewer.get("/hosts").text
    assert "2 hosts match" in listing
    assert listing.index("alice-pc") < listing.index("bob-pc")
    assert ">52</a>" in listing  # alice's open findings link to them
    assert "1 host match" in viewer.get("/hosts?host=bob*").text
    assert "No host matches" in viewer.get("/hosts?state=silent").text
    assert viewer.get("/hosts?state=asleep").status_code == 400

    bob = viewer.get(f"/hosts/{many['bob'].agent_id}").text
    installed = bob[bob.index("Banned apps installed"):bob.index("Open findings")]
    assert "Telegram" in installed and "/usr/bin/telegram-desktop" in installed
    assert 'action="/hosts/' not in bob  # only admins may revoke
    assert viewer.get("/hosts/no-such-agent").status_code == 404


def test_an_admin_revokes_a_host(person: PeopleFactory, many: dict[str, Any],
                                 client: TestClient) -> None:
    admin = person("admin")
    bob = many["bob"]
    answer = post_form(admin, f"/hosts/{bob.agent_id}/revoke", csrf_from=f"/hosts/{bob.agent_id}")
    assert answer.status_code == 303
    assert "badge state-revoked" in admin.get(f"/hosts/{bob.agent_id}").text
    assert client.post("/api/v1/agent/checkin", json={}, headers=bob.headers).status_code == 401


def test_an_admin_readmits_a_revoked_host(person: PeopleFactory, many: dict[str, Any],
                                          client: TestClient, enroll_secret: str) -> None:
    admin, viewer = person("admin"), person("viewer")
    bob = many["bob"]
    page = f"/hosts/{bob.agent_id}"
    assert f'action="{page}/readmit"' not in admin.get(page).text
    # Only for a revoked host: otherwise the page says why.
    refused = post_form(admin, f"{page}/readmit", csrf_from=page)
    assert refused.status_code == 409 and "not revoked" in refused.text

    revoked = post_form(admin, f"{page}/revoke", csrf_from=page, follow_redirects=True)
    assert "Agent revoked" in revoked.text
    assert f'action="{page}/readmit"' in revoked.text
    assert f'action="{page}/readmit"' not in viewer.get(page).text
    # A viewer's post, and a post without this session's CSRF token, change nothing.
    assert post_form(viewer, f"{page}/readmit", csrf_from=page).status_code == 403
    assert admin.post(f"{page}/readmit", data={"csrf_token": "forged"}).status_code == 403
    assert "badge state-revoked" in admin.get(page).text

    answer = post_form(admin, f"{page}/readmit", csrf_from=page)
    assert (answer.status_code, answer.headers["location"]) == (303,
                                                                f"{page}?notice=readmitted")
    shown = admin.get(answer.headers["location"]).text
    assert "Machine re-admitted" in shown and "badge state-revoked" not in shown
    assert f'action="{page}/revoke"' in shown
    enrolled = client.post("/api/v1/agent/enroll", json=bob.signed_facts(),
                           headers={"Authorization": f"Bearer {enroll_secret}"})
    assert (enrolled.status_code, enrolled.json()["agent_id"]) == (201, bob.agent_id)
    assert "agent.readmit" in admin.get("/audit").text


def test_an_admin_approves_or_rejects_a_held_re_enrollment_on_the_host_page(
    person: PeopleFactory, many: dict[str, Any], client: TestClient, enroll_secret: str,
) -> None:
    admin, viewer = person("admin"), person("viewer")
    bob = many["bob"]
    page = f"/hosts/{bob.agent_id}"
    secret = {"Authorization": f"Bearer {enroll_secret}"}
    assert "Re-enrollment awaiting approval" not in viewer.get(page).text
    impostor = MachineKey.generate()
    claimed = {**bob.facts, **impostor.proof(bob.facts["machine_id"]), "hostname": "evil"}
    assert client.post("/api/v1/agent/enroll", json=claimed, headers=secret).status_code == 409

    shown = viewer.get(page).text
    assert "Re-enrollment awaiting approval" in shown and impostor.public_key in shown
    assert f'action="{page}/reenrollment/approve"' not in shown  # a viewer only sees it
    assert post_form(viewer, f"{page}/reenrollment/reject", csrf_from=page).status_code == 403
    assert admin.post(f"{page}/reenrollment/reject",
                      data={"csrf_token": "forged"}).status_code == 403
    rejected = post_form(admin, f"{page}/reenrollment/reject", csrf_from=page,
                         follow_redirects=True)
    assert "Re-enrollment rejected" in rejected.text
    assert "Re-enrollment awaiting approval" not in rejected.text

    # Held again; approving a key other than the one shown is refused (it changed).
    assert client.post("/api/v1/agent/enroll", json=claimed, headers=secret).status_code == 409
    stale = post_form(admin, f"{page}/reenrollment/approve",
                      {"public_key": MachineKey.generate().public_key}, csrf_from=page)
    assert stale.status_code == 409 and "review the request again" in stale.text
    form = admin.get(page).text
    assert f'name="public_key" value="{impostor.public_key}"' in form
    approved = post_form(admin, f"{page}/reenrollment/approve",
                         {"public_key": impostor.public_key}, csrf_from=page,
                         follow_redirects=True)
    assert "Re-enrollment approved" in approved.text
    assert "approved, not used yet" in approved.text
    again = {**claimed, **impostor.proof(bob.facts["machine_id"])}
    enrolled = client.post("/api/v1/agent/enroll", json=again, headers=secret)
    assert (enrolled.status_code, enrolled.json()["agent_id"]) == (201, bob.agent_id)
    log = admin.get("/audit").text
    assert "agent.reenroll_reject" in log and "agent.reenroll_approve" in log


def test_the_overview_shows_compliance_apps_chart_and_alternatives(
    person: PeopleFactory, many: dict[str, Any]
) -> None:
    page = person("viewer").get("/").text
    fleet = page[page.index("Fleet compliance"):page.index("Findings opened per day")]
    figures = re.findall(r'<span class="stat-value">(\d+)</span>\s*'
                         r'<span class="stat-label">([^<]+)</span>', fleet)
    assert [(int(value), label.split()[0]) for value, label in figures][:2] == [
        (2, "agents"), (0, "agents")]
    assert page.count('<rect class="chart-bar"') == 30
    assert re.search(r"<title>\d{4}-\d\d-\d\d: 54 findings</title>", page)
    assert re.search(r"Telegram</a></td>\s*<td class=\"num\">54</td>", page)
    alternatives = page[page.index("Banned apps and what to use instead"):]
    assert "Telegram</span> is banned" in alternatives
    assert 'href="https://signal.org/download/"' in alternatives
    latest = page[page.index("Latest findings"):page.index("Banned apps and")]
    assert latest.count('href="/findings/') == 10 and 'href="/findings">All findings' in latest


def test_every_kind_of_evidence_and_an_action_render(
    person: PeopleFactory, client: TestClient, enroll: Callable[..., EnrolledAgent], db: DB
) -> None:
    windows = enroll(hostname="fin-lt-0142", os="windows")
    winget = InstalledObservation(source="winget", id="Telegram.TelegramDesktop",
                                  version="5.3.1")
    opened = event(process(77, "Telegram.exe"), time=utcnow(), os_name="windows")
    action = {**opened, "id": str(uuid.uuid4()), "type": "action",
              "result": {"action": "notify", "ok": True, "detail": "told m.keller"}}
    post_events(client, windows.headers, event(winget, time=utcnow(), os_name="windows"),
                event(connection(), time=utcnow(), os_name="windows"), opened, action)
    viewer = person("viewer")
    table = viewer.get("/findings?host=fin-lt-0142")
    assert table.status_code == 200
    assert "Telegram.TelegramDesktop" in table.text and "5.3.1" in table.text
    assert "149.154.167.51:443" in table.text
    with db() as session:
        ids = list(session.scalars(sa.select(Finding.id).order_by(Finding.id)))
    pages = [viewer.get(f"/findings/{finding_id}") for finding_id in ids]
    assert [page.status_code for page in pages] == [200, 200, 200]
    assert "notify: done — told m.keller" in pages[2].text
    host = viewer.get(f"/hosts/{windows.agent_id}")
    assert host.status_code == 200 and "Telegram.TelegramDesktop" in host.text
