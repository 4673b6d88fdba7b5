"""Time to remediate kept in the daily snapshots: each resolution counted once, in the first
snapshot taken after it, and the history answered from the snapshots alone.

Violations come from real agent events; snapshots are taken on demand at chosen moments
(time is driven, not waited for). Runs on SQLite and PostgreSQL, the migration too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server import db as server_db
from server.db import utcnow
from server.models import ComplianceSnapshot, Violation
from server.settings import ServerSettings
from server.store import compliance
from tests.server.admin_support import bearer, event, post_events, process

EnrolledAgent = Any
DB = sessionmaker[Session]
SILENT = dt.timedelta(minutes=15)
# Yesterday noon: every moment below is in the past and on the day its name says, whatever
# the time the tests run at.
BASE = dt.datetime.combine(utcnow().date(), dt.time(), dt.UTC) - dt.timedelta(hours=12)
OPENED = BASE - dt.timedelta(days=10)


def snapshot(db: DB, when: dt.datetime) -> None:
    with db() as session:
        compliance.take_snapshot(session, when, SILENT)
        session.commit()


def resolve(client: TestClient, machine: EnrolledAgent, when: dt.datetime) -> None:
    post_events(client, machine.headers, event(process(1), kind="finding_resolved", time=when))


def remediation(db: DB, when: dt.datetime) -> dict[str, tuple[int, float | None]]:
    with db() as session:
        return {row.group: (row.resolved, row.median_days_to_remediate)
                for row in session.scalars(sa.select(ComplianceSnapshot).where(
                    ComplianceSnapshot.day == when.date()))}


def history(client: TestClient, token: str, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/compliance/history", params=params, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["time_to_remediate"]
    return rows


@pytest.fixture
def finance(client: TestClient, enroll: Callable[..., EnrolledAgent],
            make_secret: Callable[..., str]) -> list[EnrolledAgent]:
    """Three finance machines and one press machine, each with Telegram since OPENED."""
    client.app.state.compliance_task.shutdown()  # type: ignore[attr-defined]  # on demand here
    secret, press = make_secret(group="finance"), make_secret(group="press")
    machines = [enroll(hostname=f"fin-{n}", secret=secret) for n in range(3)]
    machines.append(enroll(hostname="press-0", secret=press))
    for machine in machines:
        post_events(client, machine.headers, event(process(1), time=OPENED))
    return machines


def test_each_resolution_counts_once_in_the_first_snapshot_after_it(
    client: TestClient, admin_token: str, finance: list[EnrolledAgent], db: DB
) -> None:
    snapshot(db, BASE - dt.timedelta(days=3))
    resolve(client, finance[0], BASE - dt.timedelta(days=2))  # after 8 days
    snapshot(db, BASE - dt.timedelta(days=2) + dt.timedelta(hours=1))
    assert remediation(db, BASE - dt.timedelta(days=2))["finance"] == (1, pytest.approx(8.0))
    # The server is down the next day: that day's resolution waits for the next snapshot.
    resolve(client, finance[1], BASE - dt.timedelta(days=1))  # after 9 days
    resolve(client, finance[2], BASE - dt.timedelta(hours=2))  # after 10 days less 2 hours
    snapshot(db, BASE)
    snapshot(db, BASE)  # taken again the same day: the same figures, not doubled
    latest = remediation(db, BASE)
    assert latest["finance"] == (2, pytest.approx((9 + 10 - 2 / 24) / 2))
    assert latest["press"] == (0, None)
    assert remediation(db, BASE - dt.timedelta(days=3))["finance"] == (0, None)

    [week] = history(client, admin_token, days=7)
    # Medians 8 (one violation) and 9.46 (two): the middle of 8, 9.46, 9.46.
    assert week["group"] == "finance" and week["resolved"] == 3
    assert week["median_days"] == pytest.approx(9.46, abs=0.01)
    [two_days] = history(client, admin_token, days=2, group="finance")  # today and BASE's day
    assert two_days["resolved"] == 2
    assert two_days["median_days"] == pytest.approx(9.46, abs=0.01)
    assert history(client, admin_token, days=7, group="press") == []


def test_the_history_never_reads_violations_once_the_snapshots_hold_the_figures(
    client: TestClient, admin_token: str, finance: list[EnrolledAgent], db: DB
) -> None:
    snapshot(db, BASE - dt.timedelta(days=1))
    resolve(client, finance[0], BASE - dt.timedelta(hours=5))
    snapshot(db, BASE)
    with db() as session:
        session.execute(sa.delete(Violation))
        session.commit()
    [row] = history(client, admin_token, days=30)
    assert (row["group"], row["resolved"]) == ("finance", 1)
    assert row["median_days"] == pytest.approx(10 - 5 / 24, abs=0.01)


# The median of the values, each counted `weight` times: what the history reports across days.
@pytest.mark.parametrize(("values", "expected"), [
    ([(3.0, 1)], 3.0),                          # one day, one violation
    ([(3.0, 4)], 3.0),                          # one day: its own median
    ([(1.0, 1), (5.0, 1)], 3.0),                # even total: between the two middle ones
    ([(5.0, 1), (1.0, 2)], 1.0),                # order does not matter; weight does
    ([(1.0, 2), (5.0, 2)], 3.0),                # the middle falls between two days
    ([(1.0, 1), (2.0, 1), (9.0, 5)], 9.0),      # a heavy day outweighs two light ones
])
def test_weighted_median(values: list[tuple[float, int]], expected: float) -> None:
    assert compliance.weighted_median(values) == pytest.approx(expected)


def test_weighted_median_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no weight"):
        compliance.weighted_median([])


def test_the_migration_adds_the_figures_to_existing_snapshots_and_back(
    client: TestClient, admin_token: str, finance: list[EnrolledAgent], db: DB,
    settings: ServerSettings
) -> None:
    snapshot(db, BASE - dt.timedelta(days=1))
    engine = server_db.create_engine(settings.resolved_database_url)
    try:
        with server_db.writer(engine).begin() as link:
            config = server_db.alembic_config()
            config.attributes["connection"] = link
            command.downgrade(config, "0011")
            columns = {column["name"] for column in sa.inspect(link).get_columns(
                "compliance_snapshots")}
            assert "resolved" not in columns and "median_days_to_remediate" not in columns
        server_db.run_migrations(engine)
    finally:
        engine.dispose()
    before = remediation(db, BASE - dt.timedelta(days=1))
    assert before == {"finance": (0, None), "press": (0, None)}
    assert history(client, admin_token, days=7) == []
    resolve(client, finance[0], BASE - dt.timedelta(hours=1))
    snapshot(db, BASE)
    assert remediation(db, BASE)["finance"] == (1, pytest.approx(10 - 1 / 24))
