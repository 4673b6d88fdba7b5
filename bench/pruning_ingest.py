"""Pruning under ingest: does deleting a million old events hold back event ingest?

For a SQLite file, and for PostgreSQL when WARDEN_TEST_DATABASE_URL or --database-url is
given (in a schema of its own, dropped afterwards): initialise a server, serve it in a
child process as `warden server run` does (uvicorn, one process), enroll agents over
HTTP, seed --events events received 400 days ago straight into the database (one
executemany transaction on SQLite, COPY on PostgreSQL), then post event batches from
the agents over real HTTP on loopback in a closed loop:

1. with nothing else running (`ingest alone`);
2. while the server's own retention task deletes the old events (`while pruning`): the
   code the daily task runs (`RetentionTask.run_once`, default batch size and pause),
   started on demand in the server process, so it competes for the same interpreter
   and the same database as ingest; the phase ends when the prune does.

Prints, per phase: batches/s, events/s, batch latency p50/p99/max, the server's CPU,
and how long the prune took. The load generator shares the 2-core machine with the
server, so figures are a floor; compare the two phases of one run.
With --rate R the batches go out on a schedule instead (an open loop, R a second, latency
counted from each batch's schedule): a fleet's pace below what the server can take, where
the question is whether the prune delays ingest at all.
Run: .venv/bin/python bench/pruning_ingest.py [--events 1000000] [--seconds 20] [--rate R]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from load_database import BATCH_EVENTS, finding, postgres_schema
from load_http import Pool
from load_report import Phase
from server_load import _run, closed_loop, enroll_all, open_loop, running_server

from server import db
from server.bootstrap import initialize
from server.jobs.pruning import DEFAULT_RETENTION_DAYS
from server.models import Event
from server.settings import ServerSettings

# Beyond the default retention (180 days), a second apart: every seeded event goes.
OLD_DAYS = 400
SEED_BATCH = 20_000
PRUNE_NOW = "prune-now"
PRUNE_REPORT = "prune-report.json"


# -- the server (child process) -----------------------------------------------------------


def serve(data_dir: Path, port: int) -> None:
    """The app as `warden server run` serves it, plus a prune started when PRUNE_NOW appears."""
    import uvicorn

    from server.app import create_app
    from server.jobs.pruning import RetentionTask

    app = create_app(ServerSettings(data_dir=data_dir))
    context = app.state.context
    # The app's own daily task would start its first prune five minutes after start, on its
    # own schedule; this run starts the same task's work when the load is ready for it.
    context.hooks.on_startup[:] = [hook for hook in context.hooks.on_startup
                                   if not isinstance(getattr(hook, "__self__", None),
                                                     RetentionTask)]
    task = RetentionTask(context)

    def prune_when_asked() -> None:
        trigger = data_dir / PRUNE_NOW
        while not trigger.exists():
            time.sleep(0.05)
        began = time.perf_counter()
        report = task.run_once()
        answer = {"seconds": time.perf_counter() - began,
                  **(report.as_dict() if report else {"failed": True})}
        partial = data_dir / (PRUNE_REPORT + ".partial")
        partial.write_text(json.dumps(answer))
        partial.replace(data_dir / PRUNE_REPORT)

    threading.Thread(target=prune_when_asked, name="bench-prune", daemon=True).start()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)


# -- the old events -------------------------------------------------------------------------


def seed_old_events(database_url: str, agent_ids: list[str], count: int) -> float:
    """`count` events received OLD_DAYS ago (a second apart), as agents send them; seconds."""
    engine = db.create_engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    oldest = dt.datetime.now(dt.UTC) - dt.timedelta(days=OLD_DAYS)
    began = time.perf_counter()
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        columns = "id, agent_id, type, time, received_at, finding_key, payload"
        template = json.dumps({**finding(99999999), "id": "EVENT-ID"})
        for start in range(0, count, SEED_BATCH):
            rows = [_old_event(number, agent_ids, oldest, postgres, template)
                    for number in range(start, min(start + SEED_BATCH, count))]
            if postgres:
                with cursor.copy(f"COPY events ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                # A transaction per batch: the running server's own writers (its compliance
                # task) would give up after SQLite's 30 s busy timeout behind one for all.
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(f"INSERT INTO events ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   rows)
            connection.commit()
        if postgres:
            # As autovacuum would have by then: the prune's plans need the table's statistics.
            cursor.execute("ANALYZE events")
            connection.commit()
    finally:
        connection.close()
        engine.dispose()
    return time.perf_counter() - began


def _old_event(number: int, agent_ids: list[str], oldest: dt.datetime,
               postgres: bool, template: str) -> tuple[Any, ...]:
    when = oldest + dt.timedelta(seconds=number)
    stamp: Any = when if postgres else when.replace(tzinfo=None).isoformat(" ")
    event_id = str(uuid.uuid4())
    # The agent's event as JSON, by substitution: a million json.dumps cost minutes.
    payload = template.replace("EVENT-ID", event_id).replace("99999999", str(number))
    return (event_id, agent_ids[number % len(agent_ids)], "finding_opened", stamp, stamp,
            f"telegram|process|pid:{number}:1000.00", payload)


def old_events_left(database_url: str) -> int:
    engine = db.create_engine(database_url)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=DEFAULT_RETENTION_DAYS)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(
                sa.select(sa.func.count()).select_from(Event)
                .where(Event.received_at < cutoff)) or 0)
    finally:
        engine.dispose()


# -- the load -------------------------------------------------------------------------------


async def ingest_phases(base_url: str, secret: str, data_dir: Path, database_url: str,
                        args: argparse.Namespace, server: psutil.Process) -> list[Phase]:
    enrolling = Pool(base_url, size=args.concurrency * 2)
    try:
        agents = await enroll_all(enrolling, secret, args.agents)
    finally:
        enrolling.close()
    engine = db.create_engine(database_url)
    with engine.connect() as connection:
        agent_ids = list(connection.exec_driver_sql("SELECT id FROM agents").scalars())
    engine.dispose()
    seconds = seed_old_events(database_url, agent_ids, args.events)
    print(f"  seeded {args.events:,} events received {OLD_DAYS} days ago in {seconds:.1f} s",
          file=sys.stderr)
    # Fresh connections: the server closed the idle keep-alive ones while the seeding ran.
    pool = Pool(base_url, size=args.concurrency * 2)
    try:
        pids = iter(range(1, 10**9))

        async def post_batch(index: int) -> tuple[bool, int]:
            events = [finding(next(pids)) for _ in range(BATCH_EVENTS)]
            code, _ = await pool.request("POST", "/api/v1/agent/events",
                                         agents[index % len(agents)],
                                         json.dumps({"events": events}).encode())
            return code == 200, len(events)

        await closed_loop("warm-up", 3, args.concurrency, post_batch, server)
        report = data_dir / PRUNE_REPORT
        if args.rate:
            # A fleet's pace: batches on a schedule, below what the server can take.
            alone = await open_loop(f"ingest alone at {args.rate:g} batches/s", args.seconds,
                                    args.rate, post_batch, server)
            (data_dir / PRUNE_NOW).touch()
            pruning = await open_loop(f"ingest while pruning at {args.rate:g} batches/s",
                                      args.max_prune_seconds, args.rate, post_batch, server,
                                      until=report.exists)
        else:
            alone = await closed_loop("ingest alone", args.seconds, args.concurrency,
                                      post_batch, server)
            (data_dir / PRUNE_NOW).touch()
            pruning = await closed_loop("ingest while pruning", args.max_prune_seconds,
                                        args.concurrency, post_batch, server,
                                        until=report.exists)
        if not report.exists():
            left = old_events_left(database_url)
            pruning.name += (f" (unfinished: {args.events - left:,} of {args.events:,} events "
                             f"deleted in {pruning.seconds:.0f} s)")
        else:
            done = json.loads(report.read_text())
            pruning.name += (f" ({done['events']:,} events in {done['seconds']:.1f} s, "
                             f"{done['batches']} batches)")
        return [alone, pruning]
    finally:
        pool.close()


def run_backend(name: str, database_url: str | None, args: argparse.Namespace) -> list[Phase]:
    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = ServerSettings(data_dir=data_dir, database_url=database_url)
        init = initialize(settings)
        assert init.enroll_secret
        serving = [sys.executable, __file__, "--serve", str(data_dir)]
        with running_server(data_dir, database_url,
                            command=lambda port: [*serving, str(port)]) as (base_url, pid):
            return _run(ingest_phases(base_url, init.enroll_secret, data_dir,
                                      settings.resolved_database_url, args,
                                      psutil.Process(pid)))


def print_table(results: list[tuple[str, list[Phase]]], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(f"Pruning under ingest — {args.agents} agents, {args.concurrency} batches of "
          f"{BATCH_EVENTS} events in flight, {dt.date.today().isoformat()}, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print()
    print("| database | phase | batches/s | events/s | p50 ms | p99 ms | max ms | server CPU "
          "| errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, phases in results:
        for phase in phases:
            print(f"| {name} | {phase.name} | {phase.rate:,.1f} | {phase.events_per_second:,.0f} "
                  f"| {phase.percentile(0.5):.1f} | {phase.percentile(0.99):.1f} | "
                  f"{max(phase.latencies_ms, default=float('nan')):.1f} | "
                  f"{phase.cpu_percent or 0:.0f} % | {phase.errors} |")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="old events to prune")
    parser.add_argument("--agents", type=int, default=50, help="simulated agents (enrolled)")
    parser.add_argument("--concurrency", type=int, default=8, help="event batches in flight")
    parser.add_argument("--rate", type=float, default=None,
                        help="batches a second on a schedule (an open loop, as a fleet posts) "
                             "instead of the closed loop that saturates the server")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of `ingest alone`")
    parser.add_argument("--max-prune-seconds", type=float, default=600.0,
                        help="stop waiting for the prune after this long")
    parser.add_argument("--database-url", default=os.environ.get("WARDEN_TEST_DATABASE_URL"))
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    args = parser.parse_args()
    results = []
    if args.only != "postgresql":
        results.append(("SQLite", run_backend("SQLite", None, args)))
    if args.database_url and args.only != "sqlite":
        with postgres_schema(args.database_url) as url:
            results.append(("PostgreSQL", run_backend("PostgreSQL", url, args)))
    print_table(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
