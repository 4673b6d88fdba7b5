"""Retention: old events and resolved findings pruned in batches, open findings kept,
ingestion undisturbed. Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.

Data goes in through the real agent API; "old" is then made by moving the
stored timestamps back, as time passing would.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import threading
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.app import create_app
from server.cli import maintenance_commands, server_commands
from server.db import utcnow
from server.jobs.pruning import (
    DEFAULT_RETENTION_DAYS,
    PruneReport,
    RetentionTask,
    prune,
    retention_days,
)
from server.models import Event, Finding
from server.settings import ServerSettings

EnrolledAgent = Any
DB = sessionmaker[Session]
EVENTS = "/api/v1/agent/events"
NOW = utcnow()
OLD = NOW - dt.timedelta(days=200)
RECENT = NOW - dt.timedelta(days=5)
DEADLINE = 30.0


def event(kind: str, key: str, event_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()),
        "type": kind,
        "time": (NOW - dt.timedelta(minutes=1)).isoformat(),
        "finding": {"key": key, "app": "telegram", "verdict": "deny", "action": "notify",
                    "sensor": "process", "evidence": {"pid": 4242, "exe": key},
                    "alternative": "signal"},
    }
    if kind == "action":
        body["result"] = {"action": "notify", "ok": True, "detail": "notified"}
    return body


def post(client: TestClient, agent: EnrolledAgent, *events: dict[str, Any]) -> list[str]:
    response = client.post(EVENTS, json={"events": list(events)}, headers=agent.headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == [e["id"] for e in events]
    return [e["id"] for e in events]


def age_events(db: DB, ids: list[str], when: dt.datetime) -> None:
    with db() as session:
        session.execute(sa.update(Event).where(Event.id.in_(ids))
                        .values(received_at=when, time=when))
        session.commit()


def age_finding(db: DB, agent: EnrolledAgent, key: str, when: dt.datetime, **values: Any
                ) -> None:
    """Move a finding's times back; pass resolved=True to age its resolution too."""
    changes: dict[str, Any] = {"first_seen": when, "last_seen": when}
    if values.pop("resolved", False):
        changes["resolved_at"] = when
    with db() as session:
        session.execute(sa.update(Finding)
                        .where(Finding.agent_id == agent.agent_id, Finding.key == key)
                        .values(**changes, **values))
        session.commit()


def event_ids(db: DB) -> set[str]:
    with db() as session:
        return set(session.scalars(sa.select(Event.id)))


def finding_keys(db: DB) -> set[str]:
    with db() as session:
        return set(session.scalars(sa.select(Finding.key)))


def no_pause() -> bool:
    return True


def test_old_events_go_and_recent_ones_stay(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    old = post(client, enrolled_agent, event("finding_opened", "/opt/a/telegram"),
               event("action", "/opt/a/telegram"))
    recent = post(client, enrolled_agent, event("finding_opened", "/opt/b/telegram"))
    age_events(db, old, OLD)

    report = prune(db, 30, between_batches=no_pause)

    assert (report.events, report.findings, report.complete) == (2, 0, True)
    assert event_ids(db) == set(recent)
    # Both findings are open: they stay, the old one without its old events.
    assert finding_keys(db) == {"/opt/a/telegram", "/opt/b/telegram"}


def test_resolved_findings_go_with_their_events_and_open_ones_always_stay(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    agent = enrolled_agent
    # Open for 400 days: the app is still there, the finding stays.
    still_open = post(client, agent, event("finding_opened", "/open/telegram"))
    age_events(db, still_open, NOW - dt.timedelta(days=400))
    age_finding(db, agent, "/open/telegram", NOW - dt.timedelta(days=400))
    # Reviewers marked it resolved, but the agent still sees it: it stays too.
    triaged = post(client, agent, event("finding_opened", "/triaged/telegram"))
    age_events(db, triaged, OLD)
    age_finding(db, agent, "/triaged/telegram", OLD, triage="resolved")
    # Resolved long ago; its resolution arrived only recently (the agent was offline).
    gone_opened = post(client, agent, event("finding_opened", "/gone/telegram"))
    late_resolve = post(client, agent, event("finding_resolved", "/gone/telegram"))
    age_events(db, gone_opened, OLD)
    age_finding(db, agent, "/gone/telegram", OLD, resolved=True)
    # Resolved five days ago: within retention.
    fresh = post(client, agent, event("finding_opened", "/fresh/telegram"),
                 event("finding_resolved", "/fresh/telegram"))
    age_finding(db, agent, "/fresh/telegram", RECENT, resolved=True)

    dry = prune(db, 30, dry_run=True)
    assert (dry.events, dry.findings, dry.dry_run) == (4, 1, True)
    assert len(event_ids(db)) == 6, "a dry run deletes nothing"

    report = prune(db, 30, between_batches=no_pause)

    assert (report.events, report.findings) == (dry.events, dry.findings)
    assert finding_keys(db) == {"/open/telegram", "/triaged/telegram", "/fresh/telegram"}
    assert event_ids(db) == set(fresh)
    assert late_resolve[0] not in event_ids(db)
    with db() as session:
        statuses = {key: status for key, status in
                    session.execute(sa.select(Finding.key, Finding.status))}
    assert statuses["/open/telegram"] == "open" and statuses["/triaged/telegram"] == "open"
    # Nothing is left to prune: a second run is a no-op.
    again = prune(db, 30, between_batches=no_pause)
    assert (again.events, again.findings, again.batches) == (0, 0, 0)


def test_many_rows_go_in_bounded_batches(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB, app: FastAPI
) -> None:
    batch = 7
    old_events = post(client, enrolled_agent,
                      *(event("action", "/busy/telegram") for _ in range(40)))
    keys = [f"/resolved-{n}/telegram" for n in range(16)]
    resolved = post(client, enrolled_agent,
                    *(event(kind, key) for key in keys
                      for kind in ("finding_opened", "finding_resolved")))
    recent = post(client, enrolled_agent, event("finding_opened", "/recent/telegram"))
    age_events(db, old_events, OLD)
    for key in keys:
        age_finding(db, enrolled_agent, key, OLD, resolved=True)
    reads: sessionmaker[Session] = app.state.context.read_sessions
    sizes: list[tuple[int, int]] = []

    def count_rows() -> tuple[int, int]:
        with reads() as session:
            return (session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0,
                    session.scalar(sa.select(sa.func.count()).select_from(Finding)) or 0)

    before = [count_rows()]

    def measure() -> bool:
        now = count_rows()
        sizes.append((before[-1][0] - now[0], before[-1][1] - now[1]))
        before.append(now)
        return True

    report = prune(db, 30, batch_size=batch, between_batches=measure)

    # Phase one: the 40 old events, 7 at a time; phase two: 16 findings (and their 32
    # recent events), 7 findings at a time.
    assert (report.events, report.findings) == (40 + 32, 16)
    assert report.batches == math.ceil(40 / batch) + math.ceil(16 / batch)
    assert all(0 < findings <= batch for _, findings in sizes if findings)
    assert all(events <= batch for events, findings in sizes if not findings)
    assert event_ids(db) == set(recent) and not set(resolved) & event_ids(db)
    assert finding_keys(db) == {"/recent/telegram"}


def test_ingestion_goes_on_while_a_prune_runs(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB, live_server: str
) -> None:
    old = post(client, enrolled_agent, *(event("action", "/old/telegram") for _ in range(60)))
    age_events(db, old, OLD)
    posted: list[str] = []
    failures: list[str] = []
    progress = threading.Condition()
    stop = threading.Event()

    def ingest() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                batch = [event("finding_opened", f"/new-{uuid.uuid4()}/telegram")
                         for _ in range(5)]
                response = session.post(f"{live_server}{EVENTS}", json={"events": batch},
                                        headers=enrolled_agent.headers, timeout=DEADLINE)
                with progress:
                    if response.status_code == 200:
                        posted.extend(e["id"] for e in batch)
                    else:
                        failures.append(f"{response.status_code} {response.text}")
                    progress.notify_all()

    def after_ingesting() -> bool:
        # Each pause lasts until an agent batch got through, so prune and ingestion
        # really interleave; the poster also runs during the batches themselves.
        with progress:
            seen = len(posted) + len(failures)
            assert progress.wait_for(lambda: len(posted) + len(failures) > seen, DEADLINE), \
                "no event batch got through between two prune batches"
        return True

    poster = threading.Thread(target=ingest, name="agent-uploads")
    poster.start()
    try:
        report = prune(db, 30, batch_size=10, between_batches=after_ingesting)
    finally:
        stop.set()
        poster.join(DEADLINE)
    assert not poster.is_alive()
    assert failures == []
    assert report.events == 60 and report.batches == 6
    assert len(posted) >= 5 * report.batches
    assert set(posted) <= event_ids(db), "every acknowledged event is stored"
    assert not set(old) & event_ids(db)


def test_retention_days_comes_from_settings_with_a_default(settings: ServerSettings) -> None:
    assert retention_days(SimpleNamespace(retention_days=7)) == 7  # type: ignore[arg-type]
    expected = getattr(settings, "retention_days", DEFAULT_RETENTION_DAYS)
    assert retention_days(settings) == expected
    with pytest.raises(ValueError, match="at least one day"):
        prune(sessionmaker(), 0)


def test_the_background_task_prunes_and_stops_promptly(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB, app: FastAPI
) -> None:
    days = retention_days(app.state.context.settings)
    old = post(client, enrolled_agent, event("action", "/old/telegram"))
    kept = post(client, enrolled_agent, event("action", "/old/telegram"))
    age_events(db, old, NOW - dt.timedelta(days=days + 1))
    task = RetentionTask(app.state.context, interval_seconds=3600, first_run_after_seconds=0)
    task.start()
    try:
        assert task.wait_for_runs(1, DEADLINE)
        assert isinstance(task.last_report, PruneReport)
        assert task.last_report.events == 1 and task.last_report.days == days
        assert event_ids(db) == set(kept)
    finally:
        # It now waits an hour for the next run; stopping must not wait for that.
        assert task.stop(timeout=DEADLINE)


def test_the_task_follows_the_app_lifespan(settings: ServerSettings, initialized: Any
                                            ) -> None:
    # Hooked as server.app would hook it: started with the app, stopped with it.
    app = create_app(settings)
    context = app.state.context
    task = RetentionTask(context, interval_seconds=3600, first_run_after_seconds=0)
    context.hooks.on_startup.append(task.start)
    context.hooks.on_shutdown.append(task.shutdown)
    with TestClient(app):
        assert task.wait_for_runs(1, DEADLINE)
        assert task.last_report is not None and task.last_report.complete
    assert task._thread is not None and not task._thread.is_alive()


# -- `warden server prune` --------------------------------------------------------


@pytest.fixture
def warden(settings: ServerSettings, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Callable[..., int]]:
    """Run `warden server <args>` in-process, on this test's database."""
    monkeypatch.setenv("WARDEN_DATABASE_URL", settings.resolved_database_url)
    parser = argparse.ArgumentParser(prog="warden")
    subparsers = parser.add_subparsers(dest="area", required=True)
    server_commands.register(subparsers)
    maintenance_commands.register(subparsers)

    def run(*args: str) -> int:
        namespace = parser.parse_args(["server", *args])
        code: int = namespace.func(namespace)
        return code

    yield run


def test_prune_command_counts_then_deletes(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB, settings: ServerSettings,
    warden: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    old = post(client, enrolled_agent, event("action", "/old/telegram"),
               event("action", "/old/telegram"))
    recent = post(client, enrolled_agent, event("action", "/old/telegram"))
    age_events(db, old, NOW - dt.timedelta(days=40))
    data_dir = str(settings.data_dir)

    assert warden("prune", "--data-dir", data_dir, "--days", "30", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and (dry["events"], dry["findings"]) == (2, 0)
    assert event_ids(db) == set(old) | set(recent)

    # The default retention (180 days) keeps 40-day-old events.
    assert warden("prune", "--data-dir", data_dir) == 0
    assert "Deleted 0 events and 0 resolved findings older than 180 days" in \
        capsys.readouterr().out
    assert warden("prune", "--data-dir", data_dir, "--days", "30") == 0
    assert "Deleted 2 events and 0 resolved findings older than 30 days" in \
        capsys.readouterr().out
    assert event_ids(db) == set(recent)


def test_prune_command_refuses_bad_input(
    tmp_path: Any, warden: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        warden("prune", "--data-dir", str(tmp_path / "data"), "--days", "0")
    assert exit_info.value.code == 2
    assert "keep at least 1 day" in capsys.readouterr().err
    assert warden("prune", "--data-dir", str(tmp_path / "elsewhere")) == 1
    assert "is not initialised" in capsys.readouterr().err
