"""Compliance over time: daily snapshots per group, history, time to remediate, reports.

Machines and violations come from real agent events; snapshots are taken on
demand for chosen days (time is driven, not waited for). The PDF is parsed back
with pypdf and its text checked. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy.orm import Session, sessionmaker

from policies.loader import load_catalog
from server.db import utcnow
from server.models import ComplianceSnapshot
from server.store import compliance, policies
from tests.server.admin_support import (
    TELEGRAM_DEB,
    assert_error,
    bearer,
    event,
    post_events,
    process,
)

EnrolledAgent = Any
DB = sessionmaker[Session]
SILENT = dt.timedelta(minutes=15)
NOW = utcnow()

EXCEPTED_POLICY = f"""\
name: with a press exception
rules:
  - app: telegram
    verdict: deny
    action: notify
    alternative: signal
    exceptions:
      - groups: [press]
        expires: {(NOW + dt.timedelta(days=20)).date().isoformat()}
        reason: Monitors public channels for the press office
  - app: signal
    verdict: allow
"""


def snapshot(db: DB, when: dt.datetime) -> int:
    with db() as session:
        taken = compliance.take_snapshot(session, when, SILENT)
        session.commit()
    return taken


@pytest.fixture
def fleet(client: TestClient, enroll: Callable[..., EnrolledAgent],
          make_secret: Callable[..., str], db: DB) -> dict[str, EnrolledAgent]:
    """finance: 3 machines, 2 with Telegram; press: 2 machines, 1 with it; 1 in no group.
    Snapshots two days ago and yesterday; then one finance machine removes Telegram."""
    client.app.state.compliance_task.shutdown()  # type: ignore[attr-defined]  # on demand here
    finance, press = make_secret(group="finance"), make_secret(group="press")
    machines = {f"fin-{n}": enroll(hostname=f"fin-{n}", secret=finance) for n in range(3)}
    machines |= {f"press-{n}": enroll(hostname=f"press-{n}", secret=press) for n in range(2)}
    machines["loose"] = enroll(hostname="loose")
    opened = NOW - dt.timedelta(days=3)
    for name in ("fin-0", "fin-1", "press-0"):
        post_events(client, machines[name].headers, event(process(1), time=opened),
                    event(TELEGRAM_DEB, time=opened))
    snapshot(db, NOW - dt.timedelta(days=2))
    snapshot(db, NOW - dt.timedelta(days=1))
    post_events(client, machines["fin-0"].headers,
                event(process(1), kind="finding_resolved", time=NOW - dt.timedelta(hours=1)),
                event(TELEGRAM_DEB, kind="finding_resolved", time=NOW - dt.timedelta(hours=1)))
    snapshot(db, NOW)
    return machines


def test_a_snapshot_per_group_per_day_and_again_the_same_day_replaces_it(
    fleet: dict[str, EnrolledAgent], db: DB
) -> None:
    assert snapshot(db, NOW) == 3  # finance, press, no group: idempotent per day
    with db() as session:
        rows = {(row.day, row.group): row for row in session.scalars(
            sa.select(ComplianceSnapshot))}
    assert len(rows) == 9
    today = NOW.date()
    finance = rows[(today, "finance")]
    assert (finance.total, finance.with_open_violation, finance.compliant) == (3, 1, 2)
    assert finance.open_by_app == {"telegram": 1}
    before = rows[(today - dt.timedelta(days=1), "finance")]
    assert (before.with_open_violation, before.compliant) == (2, 1)
    assert rows[(today, "")].total == 1 and rows[(today, "")].compliant == 1


def test_history_api_for_the_fleet_and_one_group(
    client: TestClient, admin_token: str, fleet: dict[str, EnrolledAgent]
) -> None:
    answer = client.get("/api/v1/compliance/history", params={"days": 7},
                        headers=bearer(admin_token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [point["with_open_violation"] for point in body["points"]] == [3, 3, 2]
    assert [point["total"] for point in body["points"]] == [6, 6, 6]
    assert body["points"][-1]["compliant_percent"] == pytest.approx(66.7)
    assert body["points"][-1]["open_by_app"] == {"telegram": 2}
    [finance] = body["time_to_remediate"]
    assert finance["group"] == "finance" and finance["resolved"] == 1
    assert finance["median_days"] == pytest.approx(3 - 1 / 24, abs=0.01)
    press = client.get("/api/v1/compliance/history", params={"days": 2, "group": "press"},
                       headers=bearer(admin_token)).json()
    assert [point["with_open_violation"] for point in press["points"]] == [1, 1]
    assert press["time_to_remediate"] == []
    for bad in ({"days": 0}, {"days": 400}, {"days": "week"}, {"grup": "x"}):
        assert_error(client.get("/api/v1/compliance/history", params=bad,
                                headers=bearer(admin_token)), 422, "validation_error")


def test_snapshots_older_than_the_retention_go(fleet: dict[str, EnrolledAgent], db: DB) -> None:
    with db() as session:
        gone = compliance.prune_snapshots(session, NOW.date() - dt.timedelta(days=1))
        session.commit()
        left = {row.day for row in session.scalars(sa.select(ComplianceSnapshot))}
    assert gone == 3 and left == {NOW.date(), NOW.date() - dt.timedelta(days=1)}


def _activate_exception_policy(client: TestClient, db: DB) -> None:
    with db() as session:
        signer = client.app.state.context.signer  # type: ignore[attr-defined]
        version = policies.add_version(session, text=EXCEPTED_POLICY, source_name="test",
                                       catalog=load_catalog(), signer=signer, actor="test")
        policies.activate(session, version.number, actor="test", signer=signer)
        session.commit()


def test_the_report_in_every_format_says_the_same(
    client: TestClient, admin_token: str, fleet: dict[str, EnrolledAgent], db: DB
) -> None:
    _activate_exception_policy(client, db)
    get = lambda **params: client.get("/api/v1/reports/compliance",  # noqa: E731
                                      params={"days": 7, **params}, headers=bearer(admin_token))
    as_json = get(format="json").json()
    assert as_json["now"]["total"] == 6 and as_json["now"]["with_open_violation"] == 2
    assert [group["group"] for group in as_json["worst_groups"]] == ["press", "finance", None]
    assert sorted(v["host"] for v in as_json["open_violations"]) == ["fin-1", "press-0"]
    [exception] = as_json["exceptions"]
    assert exception["groups"] == ["press"] and exception["source"] == "policy"

    pdf = get(format="pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith('attachment; filename="warden-compl')
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Compliance report" in text
    assert "4 of 6 machines compliant (66.7%)" in text
    for expected in ("Worst groups", "press", "fin-1", "press-0", "Time to remediate",
                     "Monitors public channels", "Active exceptions"):
        assert expected in text, expected
    assert "fin-0" not in text  # resolved: not an open violation

    html = get(format="html").text
    assert "<svg" in html and "4</strong> of <strong>6</strong>" in html
    assert "Monitors public channels" in html
    table = get(format="csv").text
    sections = [row[0] for row in csv.reader(io.StringIO(table)) if row and
                row[0].startswith("# ")]
    assert sections == ["# summary", "# trend", "# worst_groups", "# time_to_remediate",
                        "# open_violations", "# exceptions"]
    one_group = get(format="json", group="finance").json()
    assert one_group["now"]["total"] == 3 and one_group["worst_groups"] == []
    assert [v["host"] for v in one_group["open_violations"]] == ["fin-1"]
    assert_error(get(format="docx"), 422, "validation_error")


def test_the_pdf_shows_cyrillic_hostnames_and_an_empty_fleet(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    empty = client.get("/api/v1/reports/compliance", params={"format": "pdf"},
                       headers=bearer(admin_token))
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(empty.content)).pages)
    assert "0 of 0 machines compliant" in text and "No exception is in force" in text
    desk = enroll(hostname="київ-прес-01")
    post_events(client, desk.headers, event(process(1)))
    pdf = client.get("/api/v1/reports/compliance", params={"format": "pdf"},
                     headers=bearer(admin_token))
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "київ-прес-01" in text


def test_the_report_lists_exceptions_granted_on_the_server_beside_the_policys(
    client: TestClient, admin_token: str, fleet: dict[str, EnrolledAgent], db: DB
) -> None:
    _activate_exception_policy(client, db)
    until = (utcnow() + dt.timedelta(days=10)).isoformat()
    granted = client.post("/api/v1/exceptions", headers=bearer(admin_token), json={
        "app": "telegram", "host": "fin-1", "until": until, "reason": "audit of a channel"})
    assert granted.status_code == 201, granted.text
    report = client.get("/api/v1/reports/compliance", params={"days": 7, "format": "json"},
                        headers=bearer(admin_token)).json()
    by_source = {item["source"]: item for item in report["exceptions"]}
    assert by_source["policy"]["groups"] == ["press"]
    assert by_source["server"]["hosts"] == ["fin-1"]
    assert by_source["server"]["reason"] == "audit of a channel"
