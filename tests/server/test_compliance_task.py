"""The background compliance task: one snapshot a day however often it runs, old ones pruned,
and the weekly PDF written to the data directory and announced to a real webhook on loopback.

Time is driven (`run_once(now)`), never waited for. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy.orm import Session, sessionmaker

from server.jobs.compliance import ComplianceTask
from server.models import ComplianceSnapshot
from server.settings import ServerSettings
from tests.server.admin_support import event, post_events, process
from tests.server.test_alerts import Receiver, serve  # noqa: F401  (serve is a fixture)

EnrolledAgent = Any
DB = sessionmaker[Session]
# A Monday, and the Monday's weekday number.
MONDAY = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def hook(serve: Callable[[Receiver], str]) -> tuple[Receiver, str]:  # noqa: F811
    receiver = Receiver([200])
    return receiver, serve(receiver)


@pytest.fixture
def settings(tmp_path: Path, db_url: str, hook: tuple[Receiver, str]) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url,
                          weekly_report_weekday=0, retention_days=10,
                          alert_webhook_url=hook[1])


def days(db: DB) -> list[dt.date]:
    with db() as session:
        return sorted(set(session.scalars(sa.select(ComplianceSnapshot.day))))


def test_one_snapshot_a_day_however_often_it_runs_and_old_ones_go(
    app: FastAPI, client: TestClient, enroll: Callable[..., EnrolledAgent], db: DB
) -> None:
    desk = enroll(hostname="desk-1")
    post_events(client, desk.headers, event(process(1)))
    task: ComplianceTask = app.state.compliance_task
    task.shutdown()  # its thread would run on today's clock; this test drives the time
    first = MONDAY - dt.timedelta(days=20)
    assert task.run_once(first) is True
    assert task.run_once(first + dt.timedelta(hours=5)) is False
    assert days(db) == [first.date()]
    assert task.run_once(MONDAY + dt.timedelta(days=1)) is True  # a Tuesday: no report
    # Twenty days later the first is past the 10-day retention.
    assert days(db) == [(MONDAY + dt.timedelta(days=1)).date()]


def test_the_weekly_report_is_kept_and_announced_once_a_week(
    app: FastAPI, client: TestClient, enroll: Callable[..., EnrolledAgent],
    settings: ServerSettings, hook: tuple[Receiver, str]
) -> None:
    receiver, _ = hook
    desk = enroll(hostname="desk-9")
    post_events(client, desk.headers, event(process(1)))
    task: ComplianceTask = app.state.compliance_task
    task.shutdown()  # its thread would run on today's clock; this test drives the time
    task.run_once(MONDAY)
    report = settings.data_dir / "reports" / "compliance-2026-W49.pdf"
    assert report.is_file()
    text = "\n".join(page.extract_text() for page in PdfReader(report).pages)
    assert "0 of 1 machines compliant" in text and "desk-9" in text
    # The same webhook also gets the finding's alert: pick the report's message.
    assert receiver.wait_for(2)
    [posted] = [one for one in receiver.requests if "report" in one["json"]]
    assert "0 of 1 machines compliant" in posted["json"]["text"]
    assert posted["json"]["report"]["file"] == str(report)
    # Again the same Monday (a restart): neither a second file nor a second message.
    task.run_once(MONDAY + dt.timedelta(hours=3))
    assert task.weekly_report(MONDAY + dt.timedelta(hours=4)) is None
    assert len([one for one in receiver.requests if "report" in one["json"]]) == 1
    assert sorted(path.name for path in report.parent.iterdir()) == [report.name]
