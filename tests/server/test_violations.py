"""Violations: one row per machine x denied app, kept at ingest, listed, triaged, exported.

Findings go in through the real agent API, as agents send them; the violations
are read back through the admin API. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server import db as server_db
from server.models import AuditEntry, Finding, Violation
from server.settings import ServerSettings
from tests.server.admin_support import (
    T0,
    TELEGRAM_DEB,
    assert_error,
    bearer,
    connection,
    event,
    post_events,
    process,
)

EnrolledAgent = Any
DB = sessionmaker[Session]
API = "/api/v1/violations"


def later(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def violations(client: TestClient, token: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(API, params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def resolve(observation: Any, minutes: int) -> dict[str, Any]:
    return event(observation, kind="finding_resolved", time=later(minutes))


def test_every_finding_of_an_app_on_a_machine_is_one_violation(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    desk = enroll(hostname="desk-17")
    # Ten launches, the install and a connection: twelve findings, one violation.
    post_events(client, desk.headers,
                *(event(process(100 + n), time=later(n)) for n in range(10)),
                event(TELEGRAM_DEB, time=later(20)), event(connection(), time=later(30)))
    [one] = violations(client, admin_token)
    assert (one["host"], one["app"], one["status"]) == ("desk-17", "telegram", "open")
    assert one["finding_count"] == 12 and one["open_finding_count"] == 12
    assert one["sensor_counts"] == {"installed": 1, "network": 1, "process": 10}
    assert one["sightings"] == 12
    assert one["first_seen"] == T0.isoformat() and one["last_seen"] == later(30).isoformat()
    assert one["opened_at"] == T0.isoformat() and one["resolved_at"] is None
    # Seen again: one more sighting, still one row.
    post_events(client, desk.headers, event(process(100), time=later(40)))
    [one] = violations(client, admin_token)
    assert one["finding_count"] == 12 and one["sensor_counts"]["process"] == 11
    assert one["last_seen"] == later(40).isoformat()


def test_open_while_any_finding_is_open_then_resolved_then_reopened(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    desk = enroll(hostname="desk-01")
    post_events(client, desk.headers, event(process(1), time=later(0)),
                event(TELEGRAM_DEB, time=later(1)))
    post_events(client, desk.headers, resolve(process(1), 5))
    [one] = violations(client, admin_token)
    assert one["status"] == "open" and one["open_finding_count"] == 1
    post_events(client, desk.headers, resolve(TELEGRAM_DEB, 9))
    [one] = violations(client, admin_token)
    assert one["status"] == "resolved" and one["resolved_at"] == later(9).isoformat()
    assert violations(client, admin_token, status="open") == []
    # Triaged resolved, then back: a new episode that needs a fresh look.
    client.post(f"{API}/{one['id']}/triage", json={"state": "resolved"},
                headers=bearer(admin_token)).raise_for_status()
    post_events(client, desk.headers, event(process(2), time=later(60)))
    [one] = violations(client, admin_token)
    assert one["status"] == "open" and one["triage"] == "new"
    assert one["opened_at"] == later(60).isoformat()


def test_a_late_resolve_older_than_a_sighting_leaves_it_open(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    desk = enroll()
    post_events(client, desk.headers, event(process(1), time=later(10)))
    post_events(client, desk.headers, resolve(process(1), 5))  # sent late, happened earlier
    [one] = violations(client, admin_token)
    assert one["status"] == "open"


def test_apps_only_flagged_for_review_make_no_violation(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    desk = enroll()
    flagged = event(process(1))
    flagged["finding"]["verdict"] = "alert"
    post_events(client, desk.headers, flagged)
    assert violations(client, admin_token) == []


def test_filters_and_cursor_pages(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent],
    make_secret: Callable[..., str]
) -> None:
    finance = make_secret(group="finance")
    for n in range(5):
        desk = enroll(hostname=f"fin-{n}", secret=finance)
        post_events(client, desk.headers, event(process(n), time=later(n)))
    other = enroll(hostname="desk-9")
    post_events(client, other.headers, event(process(9), time=later(9)))
    assert len(violations(client, admin_token)) == 6
    assert {item["host"] for item in violations(client, admin_token, group="finance")} == {
        f"fin-{n}" for n in range(5)}
    assert [item["host"] for item in violations(client, admin_token, host="DESK-*")] == ["desk-9"]
    assert len(violations(client, admin_token, since=later(3).isoformat())) == 3
    assert violations(client, admin_token, app="signal") == []
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(API, params=params, headers=bearer(admin_token)).json()
        seen += [item["host"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["desk-9", "fin-4", "fin-3", "fin-2", "fin-1", "fin-0"]
    bad = client.get(API, params={"status": "closed", "since": "yesterday"},
                     headers=bearer(admin_token))
    error = assert_error(bad, 422, "validation_error")
    assert {detail["field"] for detail in error["details"]} >= {"status", "since"}
    findings_cursor = client.get("/api/v1/findings", params={"limit": 1},
                                 headers=bearer(admin_token)).json()["next_cursor"]
    assert_error(client.get(API, params={"cursor": findings_cursor},
                            headers=bearer(admin_token)), 422, "invalid_cursor")


def test_detail_lists_its_findings_and_triage_carries_to_them(
    client: TestClient, admin_token: str, api_token: Callable[..., str],
    enroll: Callable[..., EnrolledAgent], db: DB
) -> None:
    desk = enroll(hostname="desk-3")
    post_events(client, desk.headers, event(process(1), time=later(1)),
                event(TELEGRAM_DEB, time=later(2)))
    [one] = violations(client, admin_token)
    detail = client.get(f"{API}/{one['id']}", headers=bearer(admin_token)).json()
    assert [finding["sensor"] for finding in detail["findings"]] == ["installed", "process"]
    analyst = api_token("analyst")
    answer = client.post(f"{API}/{one['id']}/triage", headers=bearer(analyst),
                         json={"state": "acknowledged", "comment": "  talked to Olena "})
    assert answer.status_code == 200, answer.text
    assert answer.json()["triage"] == "acknowledged"
    assert answer.json()["triage_comment"] == "talked to Olena"
    with db() as session:
        states = set(session.execute(sa.select(Finding.triage, Finding.triage_comment)))
        entry = session.scalars(sa.select(AuditEntry).where(
            AuditEntry.action == "violation.triage")).one()
    assert states == {("acknowledged", "talked to Olena")}
    assert entry.target == f"violation:{one['id']}" and entry.after is not None
    assert entry.after["findings"] == 2 and entry.before == {
        "triage": "new", "triage_comment": None, "triage_by": None, "triage_at": None}
    assert_error(client.post(f"{API}/{one['id']}/triage", headers=bearer(analyst),
                             json={"state": "gone"}), 422)
    assert_error(client.post(f"{API}/999999/triage", headers=bearer(analyst),
                             json={"state": "acknowledged"}), 404, "not_found")
    assert_error(client.get(f"{API}/999999", headers=bearer(admin_token)), 404, "not_found")


def test_export_as_csv_and_json(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    for name in ("a", "b", "=cmd"):
        desk = enroll(hostname=name)
        post_events(client, desk.headers, event(process(1)))
    response = client.get(f"{API}/export", params={"format": "csv"}, headers=bearer(admin_token))
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(row["host"] for row in rows) == ["'=cmd", "a", "b"]
    assert rows[0]["sensor_counts"] == '{"process": 1}'
    as_json = client.get(f"{API}/export", params={"format": "json", "host": "a"},
                         headers=bearer(admin_token)).json()
    assert [item["host"] for item in as_json["items"]] == ["a"]


def test_the_migration_gathers_existing_findings(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent],
    settings: ServerSettings, db: DB
) -> None:
    desk, other = enroll(hostname="desk-1"), enroll(hostname="desk-2")
    post_events(client, desk.headers, event(process(1), time=later(1)),
                event(TELEGRAM_DEB, time=later(2)), resolve(process(1), 3))
    post_events(client, other.headers, event(process(5), time=later(5)), resolve(process(5), 6))
    before = sorted(violations(client, admin_token), key=lambda item: item["host"])
    engine = server_db.create_engine(settings.resolved_database_url)
    try:
        with server_db.writer(engine).begin() as link:
            config = server_db.alembic_config()
            config.attributes["connection"] = link
            command.downgrade(config, "0005")
        server_db.run_migrations(engine)
    finally:
        engine.dispose()
    after = sorted(violations(client, admin_token), key=lambda item: item["host"])

    def same(item: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in item.items() if key != "id"}

    assert [same(item) for item in after] == [same(item) for item in before]
    assert [item["status"] for item in after] == ["open", "resolved"]
    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Violation)) == 2


@pytest.mark.parametrize("days", [200])
def test_pruning_resolved_findings_takes_their_violation(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent], db: DB,
    days: int
) -> None:
    from server.jobs.pruning import prune

    desk = enroll()
    post_events(client, desk.headers, event(process(1), time=later(1)), resolve(process(1), 2))
    assert len(violations(client, admin_token)) == 1
    report = prune(db, 30, now=T0 + dt.timedelta(days=days), between_batches=lambda: True)
    assert report.findings == 1
    assert violations(client, admin_token) == []
