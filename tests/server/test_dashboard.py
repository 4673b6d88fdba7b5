"""The dashboard's pages per role, refusals, triage, policies, secrets — in process, real DB.

Findings come from real agent events (tests.server.admin_support). Each
person is a TestClient with its own cookies, logged in through the login
form. Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.db import utcnow
from server.models import AuditEntry, EnrollSecret, Finding, PolicyVersion
from server.store import policies
from tests.server.admin_support import (
    TELEGRAM_PROCESS,
    WIDER_POLICY,
    event,
    post_events,
)
from tests.server.dashboard_support import (
    PeopleFactory,
    csrf_of,
    new_browser,
    people,
    post_form,
)

EnrolledAgent = Any
DB = sessionmaker[Session]
ROLES = ("viewer", "analyst", "admin")
# Line 7 holds the bad verdict; the validator reports it there.
BAD_POLICY = """\
name: broken
mode: audit
rules:
  - app: telegram
    verdict: deny
  - app: signal
    verdict: maybe
"""


@pytest.fixture
def person(app: FastAPI, client: TestClient, api_token: Callable[..., str]) -> PeopleFactory:
    return people(app, api_token)


@pytest.fixture
def finding_id(client: TestClient, enrolled_agent: EnrolledAgent, db: DB) -> int:
    """One open Telegram finding on desk-01, reported by its agent a minute ago."""
    post_events(client, enrolled_agent.headers, event(TELEGRAM_PROCESS, time=utcnow()))
    with db() as session:
        return session.scalars(sa.select(Finding.id)).one()


def count(db: DB, model: type[Any], *where: Any) -> int:
    with db() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


# -- every page, every role ---------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_page_renders_for_each_role_and_admin_pages_only_for_admins(
    role: str, person: PeopleFactory, finding_id: int, enrolled_agent: EnrolledAgent
) -> None:
    browser = person(role)
    shared = ["/", "/findings", f"/findings/{finding_id}", "/hosts",
              f"/hosts/{enrolled_agent.agent_id}", "/policies", "/policies/1",
              "/policies/diff?from=1&to=1"]
    for path in shared:
        page = browser.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "<h1>" in page.text or "<h1" in page.text
        assert page.headers["content-type"].startswith("text/html")
    assert "desk-01" in browser.get("/").text
    admin_only = ["/audit", "/secrets", "/policies/1/impact"]
    for path in admin_only:
        page = browser.get(path)
        assert page.status_code == (200 if role == "admin" else 403), path
        if role != "admin":
            assert "This needs the admin role" in page.text
    navigation = browser.get("/").text
    # What a role may not open is not offered.
    assert ('href="/audit"' in navigation) == (role == "admin")
    assert ('href="/secrets"' in navigation) == (role == "admin")


def test_signed_out_visitors_are_sent_to_login_and_back(
    app: FastAPI, client: TestClient, db: DB
) -> None:
    browser = new_browser(app)
    answer = browser.get("/findings?app=telegram")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Ffindings%3Fapp%3Dtelegram"
    # A form posted without a session changes nothing.
    before = count(db, EnrollSecret)
    assert browser.post("/secrets", data={"group": "x"}).status_code == 303
    assert count(db, EnrollSecret) == before


# -- roles are refused what they may not do -------------------------------------------------


def test_an_analyst_sees_no_policy_forms_and_is_refused_when_posting(
    person: PeopleFactory, db: DB
) -> None:
    analyst = person("analyst")
    page = analyst.get("/policies").text
    assert 'id="upload-form"' not in page and "Upload a new version" not in page
    assert 'action="/policies/rollback"' not in page
    assert 'action="/policies/1/activate"' not in analyst.get("/policies/1").text
    token = csrf_of(page)
    versions, audit_rows = count(db, PolicyVersion), count(db, AuditEntry)

    upload = analyst.post("/policies/upload", data={"csrf_token": token, "source": WIDER_POLICY})
    assert upload.status_code == 403
    assert "needs the admin role" in upload.text
    assert analyst.post("/policies/1/activate", data={"csrf_token": token}).status_code == 403
    assert analyst.post("/policies/rollback", data={"csrf_token": token}).status_code == 403
    # Nothing changed, and each refused attempt is in the audit log, by whom and what.
    assert (count(db, PolicyVersion), count(db, AuditEntry)) == (versions, audit_rows + 3)
    with db() as session:
        refused = session.scalars(sa.select(AuditEntry).where(
            AuditEntry.action == "policy.refused").order_by(AuditEntry.id)).all()
        assert [entry.target for entry in refused] == [
            "/policies/upload", "/policies/1/activate", "/policies/rollback"]
        # Signed in with an analyst's API token: the audit names that token.
        assert all(entry.actor.startswith("token:") and entry.after == {
            "method": "POST", "role": "analyst", "needed": "admin"} for entry in refused)


def test_a_viewer_cannot_triage(person: PeopleFactory, finding_id: int, db: DB) -> None:
    viewer = person("viewer")
    page = viewer.get(f"/findings/{finding_id}").text
    assert 'id="triage-form"' not in page
    refused = viewer.post(f"/findings/{finding_id}/triage",
                          data={"csrf_token": csrf_of(page), "state": "acknowledged",
                                "comment": "looks fine"})
    assert refused.status_code == 403
    with db() as session:
        row = session.get(Finding, finding_id)
        assert row is not None and (row.triage, row.triage_comment) == ("new", None)


def test_an_analyst_acknowledges_a_finding_with_a_comment(
    person: PeopleFactory, finding_id: int, db: DB
) -> None:
    analyst = person("analyst")
    answer = post_form(analyst, f"/findings/{finding_id}/triage",
                       {"state": "acknowledged", "comment": "Spoke to Alice; removing today."},
                       csrf_from=f"/findings/{finding_id}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/findings/{finding_id}?notice=triaged"
    page = analyst.get(answer.headers["location"]).text
    assert "Triage saved." in page and "Spoke to Alice; removing today." in page
    with db() as session:
        row = session.get(Finding, finding_id)
        assert row is not None
        assert (row.triage, row.triage_comment) == ("acknowledged",
                                                    "Spoke to Alice; removing today.")
        assert row.triage_by is not None and row.triage_by.startswith("token:")
        entry = session.scalars(sa.select(AuditEntry)
                                .where(AuditEntry.action == "finding.triage")).one()
    assert entry.target == f"finding:{finding_id}" and entry.actor == row.triage_by
    bad = post_form(analyst, f"/findings/{finding_id}/triage", {"state": "ignored"},
                    csrf_from=f"/findings/{finding_id}")
    assert bad.status_code == 400


def test_forms_without_a_valid_csrf_token_or_from_another_site_change_nothing(
    person: PeopleFactory, db: DB
) -> None:
    admin, other_admin = person("admin"), person("admin")
    before = count(db, EnrollSecret)
    foreign_token = csrf_of(other_admin.get("/secrets").text)
    own_token = csrf_of(admin.get("/secrets").text)
    for data, headers in [({}, {}), ({"csrf_token": "forged"}, {}),
                          ({"csrf_token": foreign_token}, {}),
                          ({"csrf_token": own_token}, {"Origin": "https://evil.example"})]:
        answer = admin.post("/secrets", data={"group": "x", **data}, headers=headers)
        assert answer.status_code == 403, (data, headers)
    assert count(db, EnrollSecret) == before
    accepted = admin.post("/secrets", data={"group": "x", "csrf_token": own_token},
                          headers={"Origin": "http://testserver"})
    assert accepted.status_code == 201
    assert count(db, EnrollSecret) == before + 1


# -- policies ------------------------------------------------------------------------------


def test_a_policy_upload_shows_each_error_at_its_line_and_stores_nothing(
    person: PeopleFactory, db: DB
) -> None:
    admin = person("admin")
    answer = post_form(admin, "/policies/upload", {"source": BAD_POLICY}, csrf_from="/policies")
    assert answer.status_code == 422
    line = re.search(r'<li id="upload-line-7"[^>]*>(.*?)</li>', answer.text, re.S)
    assert line is not None and 'class="has-issue"' in answer.text
    assert "rules[1].verdict" in line.group(1) and "verdict: maybe" in line.group(1)
    assert re.search(r'<li id="upload-line-5"[^>]*>(.*?)</li>', answer.text,
                     re.S).group(1).count('class="issue"') == 0  # type: ignore[union-attr]
    # The text comes back in the form, to fix and send again (the browser drops the
    # newline right after <textarea>, so a policy starting with a blank line keeps it).
    assert f'aria-describedby="policy-source-help">\n{BAD_POLICY}</textarea>' in answer.text

    syntax = post_form(admin, "/policies/upload", {"source": "name: [unclosed\n"},
                       csrf_from="/policies")
    assert syntax.status_code == 422 and "YAML syntax error" in syntax.text
    binary = post_form(admin, "/policies/upload", {},
                       files={"file": ("p.yaml", b"\xff\xfe\x00bad", "text/yaml")},
                       csrf_from="/policies")
    assert binary.status_code == 422 and "not UTF-8" in binary.text
    assert count(db, PolicyVersion) == 1


def test_an_admin_uploads_previews_activates_rolls_back_and_diffs(
    person: PeopleFactory, db: DB, finding_id: int
) -> None:
    admin = person("admin")
    answer = post_form(admin, "/policies/upload", {},
                       files={"file": ("wider.yaml", WIDER_POLICY.encode(), "text/yaml")},
                       csrf_from="/policies")
    assert answer.status_code == 303 and answer.headers["location"] == "/policies/2?notice=uploaded"
    detail = admin.get(answer.headers["location"]).text
    assert "not active yet" in detail and 'action="/policies/2/activate"' in detail
    assert "Discord" in detail

    impact = admin.get("/policies/2/impact")
    assert impact.status_code == 200 and "Impact of activating v2" in impact.text
    assert "findings checked" in impact.text

    diff = admin.get("/policies/diff?from=1&to=2").text
    assert re.search(r"rule <strong>discord</strong>", diff)
    assert 'class="badge change-added">added' in diff
    assert re.search(r'class="diff-added">.*?verdict: alert', diff, re.S)

    activated = post_form(admin, "/policies/2/activate", csrf_from="/policies/2")
    assert activated.headers["location"] == "/policies/2?notice=activated"
    with db() as session:
        assert policies.active_numbers(session) == (2, 1)
    rolled = post_form(admin, "/policies/rollback", csrf_from="/policies")
    assert rolled.headers["location"] == "/policies/1?notice=rolled_back"
    with db() as session:
        assert policies.active_numbers(session) == (1, 2)
        actions = [entry.action for entry in session.scalars(
            sa.select(AuditEntry).where(AuditEntry.actor.like("token:%"))
            .order_by(AuditEntry.id))]
    assert actions[-3:] == ["policy.create", "policy.activate", "policy.rollback"]
    assert admin.get("/policies/diff?from=1&to=99").status_code == 404


# -- enrollment secrets and the audit log ---------------------------------------------------


def test_a_new_secret_is_shown_once_enrolls_an_agent_and_can_be_revoked(
    person: PeopleFactory, client: TestClient, host_facts: Callable[..., dict[str, Any]]
) -> None:
    admin = person("admin")
    created = post_form(admin, "/secrets", {"group": "finance"}, csrf_from="/secrets")
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    secret = re.search(r'value="(wen_[^"]+)"', created.text).group(1)  # type: ignore[union-attr]
    assert secret not in admin.get("/secrets").text
    enroll = client.post("/api/v1/agent/enroll", json=host_facts(),
                         headers={"Authorization": f"Bearer {secret}"})
    assert enroll.status_code == 201 and enroll.json()["group"] == "finance"

    secret_id = int(re.search(r"Secret #(\d+) created", created.text).group(1))  # type: ignore[union-attr]
    revoked = post_form(admin, f"/secrets/{secret_id}/revoke", csrf_from="/secrets")
    assert revoked.status_code == 303
    again = client.post("/api/v1/agent/enroll", json=host_facts(),
                        headers={"Authorization": f"Bearer {secret}"})
    assert again.status_code == 401
    log = admin.get("/audit").text
    assert "secret.create" in log and "secret.revoke" in log and "agent.enroll" in log
