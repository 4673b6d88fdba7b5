"""Faults under load, as figures: events produced vs stored, duplicates, 5xx, requests tried.

The same runs tests/e2e/test_faults.py checks (tests/e2e/fault_scenarios.py), with a
real `warden server run` process on loopback and simulated agents uploading from
threads in this process (tests/e2e/sim_agents.py):

- SQLite, kill -9: the server process is killed once a quarter of the events are
  acknowledged, then started again on the same data;
- PostgreSQL, kill -9: the same, with the server on a fresh PostgreSQL database;
- PostgreSQL restart: the database is stopped (fast shutdown) under the load while
  the server keeps running, then started again.

PostgreSQL rows need WARDEN_TEST_DATABASE_URL or --database-url (a fresh database per
scenario, dropped afterwards); the restart also needs pg_ctlcluster on this machine.
Every step has a deadline (--timeout per wait), so a run ends in well under 3 minutes.
Prints a markdown table (docs/reliability.md records one).

Run: .venv/bin/python bench/faults.py [--agents 50] [--events 40] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# The scenarios live with the tests that check them; this script runs from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.conftest import WardenServer
from tests.e2e.fault_scenarios import (
    ScenarioResult,
    database_outage_under_load,
    kill_server_under_load,
)
from tests.e2e.pg_control import PG_ENV, can_control_cluster, fresh_database
from tests.e2e.sim_agents import FleetPlan

COLUMNS = ("scenario", "agents", "events produced", "stored", "acked before fault",
           "acked but not stored", "applied twice", "idempotent retries", "503",
           "other 5xx", "requests tried", "no answer (down)", "seconds")


@contextmanager
def started_server(directory: Path, database_url: str | None) -> Iterator[tuple[WardenServer,
                                                                              str]]:
    env = {"WARDEN_DATABASE_URL": database_url} if database_url else {}
    server = WardenServer(directory / "server", directory / "server.log", env=env)
    server.start()
    try:
        yield server, database_url or f"sqlite:///{directory / 'server' / 'warden.db'}"
    finally:
        server.stop()


def row(result: ScenarioResult, plan: FleetPlan) -> list[str]:
    delivery, tally = result.delivery, result.tally
    twice = delivery.accepted_twice + len(delivery.finding_mismatches)
    return [result.name, str(plan.agents), str(delivery.produced), str(delivery.stored),
            str(result.acknowledged_before_fault), str(delivery.acknowledged_missing),
            str(twice), str(tally.duplicates_answered), str(tally.statuses[503]),
            str(tally.server_errors), str(tally.tried), str(tally.unanswered),
            f"{result.seconds:.1f}"]


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--events", type=int, default=40, help="events per agent")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each wait (s)")
    parser.add_argument("--database-url", default=os.environ.get(PG_ENV),
                        help=f"a PostgreSQL server to make databases on (default: ${PG_ENV})")
    args = parser.parse_args()
    plan = FleetPlan(agents=args.agents, events_per_agent=args.events)
    rows: list[list[str]] = []
    problems: list[str] = []

    def scenario(name: str, database: str | None,
                 run: Callable[[WardenServer, str], ScenarioResult]) -> None:
        print(f"running: {name} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="warden-faults-") as directory, \
                started_server(Path(directory), database) as (server, url):
            result = run(server, url)
        rows.append(row(result, plan))
        if not (result.finished and result.delivery.exactly_once):
            problems.append(f"{name}: {result.delivery}")
        problems.extend(f"{name}: {text}" for text in result.tally.malformed)

    scenario("SQLite, kill -9", None, lambda server, url: kill_server_under_load(
        "SQLite, kill -9", server, url, plan, args.timeout))
    if args.database_url:
        cluster: str = args.database_url
        with fresh_database(cluster) as database:
            scenario("PostgreSQL, kill -9", database, lambda server, url: kill_server_under_load(
                "PostgreSQL, kill -9", server, url, plan, args.timeout))
        if can_control_cluster():
            with fresh_database(cluster) as database:
                scenario("PostgreSQL restart", database,
                         lambda server, url: database_outage_under_load(
                             "PostgreSQL restart", server, url, cluster, plan, args.timeout))
        else:
            print("skipped the PostgreSQL restart: no pg_ctlcluster / local cluster here",
                  file=sys.stderr)
    else:
        print(f"skipped the PostgreSQL rows: set {PG_ENV} or --database-url", file=sys.stderr)
    print(table(rows))
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
