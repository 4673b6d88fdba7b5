"""Violations at fleet scale: the list page and API with 100,000 findings over 20,000 machines.

Fills a fresh database (20,000 agents, 100,000 findings over 60 days, a third
open) with Core inserts, gathers them into violations with migration 0006's own
backfill (downgrade to 0005, upgrade again: its time is printed too), takes the
daily compliance snapshot for each of the last 30 days (their time is printed:
the job now also records time to remediate), then asks the dashboard's
violations pages and the API's lists through the whole ASGI stack in process,
and prints median, 95th percentile and worst per request.
Target: < 200 ms. SQLite by default; PostgreSQL with --database-url (or
WARDEN_TEST_DATABASE_URL), in a schema of its own dropped afterwards.
Run: .venv/bin/python bench/violations_pages.py [--findings N] [--agents N] [--rounds R]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from dashboard_pages import fill, log_in, measure
from fastapi.testclient import TestClient
from load_database import postgres_schema

from server import db
from server.app import create_app
from server.bootstrap import initialize
from server.models import Violation
from server.settings import ServerSettings
from server.store import compliance

TARGET_MS = 200.0
SNAPSHOT_DAYS = 30


def backfill(engine: sa.Engine) -> float:
    """Seconds migration 0006 takes to gather every finding into violations."""
    config = db.alembic_config()
    with db.writer(engine).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    began = time.perf_counter()
    db.run_migrations(engine)
    return time.perf_counter() - began


def snapshots(engine: sa.Engine, settings: ServerSettings, now: dt.datetime) -> list[float]:
    """Take the daily snapshot of each of the last SNAPSHOT_DAYS days, as the job would have;
    the seconds each took."""
    sessions = db.session_factory(db.writer(engine))
    seconds = []
    for days_ago in range(SNAPSHOT_DAYS - 1, -1, -1):
        began = time.perf_counter()
        with sessions() as session:
            compliance.take_snapshot(session, now - dt.timedelta(days=days_ago),
                                     settings.silent_after)
            session.commit()
        seconds.append(time.perf_counter() - began)
    return seconds


@contextlib.contextmanager
def database(url: str | None, directory: Path) -> Iterator[str | None]:
    if url:
        with postgres_schema(url) as schema_url:
            yield schema_url
    else:
        yield None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--database-url", default=os.environ.get("WARDEN_TEST_DATABASE_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warden-bench-") as directory, \
            database(args.database_url, Path(directory)) as url:
        settings = ServerSettings(data_dir=Path(directory) / "data", database_url=url)
        admin_token = initialize(settings).admin_token
        assert admin_token is not None
        engine = db.create_engine(settings.resolved_database_url)
        started = time.perf_counter()
        fill(engine, args.agents, args.findings, dt.datetime.now(dt.UTC))
        print(f"filled {args.findings:,} findings on {args.agents:,} agents in "
              f"{time.perf_counter() - started:.1f} s ({engine.dialect.name})")
        seconds = backfill(engine)
        with engine.connect() as connection:
            total = connection.scalar(sa.select(sa.func.count()).select_from(Violation))
            some = connection.scalar(sa.select(Violation.id).order_by(Violation.id.desc()))
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql("ANALYZE")
                connection.commit()
        taken = snapshots(engine, settings, dt.datetime.now(dt.UTC))
        engine.dispose()
        print(f"migration 0006 gathered them into {total:,} violations in {seconds:.1f} s")
        print(f"{SNAPSHOT_DAYS} daily snapshots: median {statistics.median(taken) * 1000:.0f} ms,"
              f" worst {max(taken) * 1000:.0f} ms each")
        week = (dt.date.today() - dt.timedelta(days=7)).isoformat()
        with TestClient(create_app(settings)) as client:
            log_in(client, admin_token)
            pages = {
                "page: violations (all)": "/violations",
                "page: violations (open)": "/violations?status=open",
                "page: violations (telegram, new)": "/violations?app=telegram&triage=new",
                "page: violations (one host)": "/violations?host=host-00042",
                "page: violations (group, 7 days)": f"/violations?group=finance&since={week}",
                "page: one violation": f"/violations/{some}",
                "page: overview": "/",
            }
            api = {
                "api: violations (all)": "/api/v1/violations",
                "api: violations (open, limit 500)": "/api/v1/violations?status=open&limit=500",
                "api: violations (telegram, open)": "/api/v1/violations?app=telegram&status=open",
                "api: violations (group finance)": "/api/v1/violations?group=finance",
                "api: violations (group, 7 days)":
                    f"/api/v1/violations?group=finance&since={week}T00:00:00Z",
                "api: violations (host prefix)": "/api/v1/violations?host=host-0004*",
                "api: one violation": f"/api/v1/violations/{some}",
                "api: compliance history": "/api/v1/compliance/history?days=30",
            }
            print(f"\n{'request':<38} {'median':>9} {'p95':>9} {'worst':>9}  "
                  f"target {TARGET_MS:.0f} ms")
            headers = {"Authorization": f"Bearer {admin_token}"}
            for name, path in {**pages, **api}.items():
                if name.startswith("api:"):
                    client.headers.update(headers)
                times = sorted(measure(client, path, args.rounds))
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                verdict = "ok" if p95 < TARGET_MS else "SLOW"
                print(f"{name:<38} {statistics.median(times):>7.1f}ms {p95:>7.1f}ms "
                      f"{times[-1]:>7.1f}ms  {verdict}")


if __name__ == "__main__":
    main()
