"""Export and stats at fleet scale: 120,000 findings over 20,000 agents, over real HTTP.

For SQLite (a real file) and for PostgreSQL when WARDEN_TEST_DATABASE_URL or
--database-url is given (a schema of its own, dropped afterwards): initialise
a server, fill it with Core inserts (bench/dashboard_pages.fill: a third of
the findings open, over 60 days), gather them into violations with migration
0006's own backfill, start `warden server run` on loopback and measure:

- each export (findings and violations, CSV and JSON, the API's and the
  dashboard's download): bytes streamed and wall time to the last byte;
- `GET /api/v1/stats` and the dashboard's overview: median and p95.

Targets (issues 14 and 16): a whole export in <= 2 s, stats and overview < 50 ms.
Run: .venv/bin/python bench/export_stats.py [--findings N] [--agents N] [--rounds R]
     [--export-rounds R] [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import sqlalchemy as sa
from dashboard_pages import fill
from load_database import postgres_schema
from server_load import running_server
from violations_pages import backfill

from server import db
from server.bootstrap import initialize
from server.models import Violation
from server.settings import ServerSettings

EXPORT_TARGET_S = 2.0
READ_TARGET_MS = 50.0
EXPORTS = {
    "findings CSV (API)": "/api/v1/findings/export?format=csv",
    "findings JSON (API)": "/api/v1/findings/export?format=json",
    "findings CSV (dashboard)": "/findings/export.csv",
    "violations CSV (API)": "/api/v1/violations/export?format=csv",
    "violations JSON (API)": "/api/v1/violations/export?format=json",
}
READS = {"stats (API)": "/api/v1/stats", "overview (dashboard)": "/"}


def seed(url: str, agents: int, findings: int) -> None:
    engine = db.create_engine(url)
    try:
        began = time.perf_counter()
        fill(engine, agents, findings, dt.datetime.now(dt.UTC))
        filled = time.perf_counter() - began
        gathered = backfill(engine)
        with engine.connect() as connection:
            total = connection.scalar(sa.select(sa.func.count()).select_from(Violation))
        if engine.dialect.name == "postgresql":
            # As autovacuum would have by then: statistics and the visibility map.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        print(f"  filled {findings:,} findings on {agents:,} agents in {filled:.1f} s, "
              f"gathered into {total:,} violations in {gathered:.1f} s", file=sys.stderr)
    finally:
        engine.dispose()


def log_in(http: httpx.Client, token: str) -> None:
    page = http.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None, "no CSRF field on the login page"
    answer = http.post("/login", data={"csrf_token": csrf.group(1), "method": "token",
                                       "token": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text


def cpu_seconds(server: psutil.Process) -> float:
    used = server.cpu_times()
    return used.user + used.system


def download(http: httpx.Client, path: str, server: psutil.Process) -> tuple[int, float, float]:
    """(bytes, seconds to the last byte, server CPU seconds): the CPU figure moves less than
    the wall time when other work shares the machine."""
    size = 0
    cpu = cpu_seconds(server)
    began = time.perf_counter()
    with http.stream("GET", path) as response:
        assert response.status_code == 200, (path, response.status_code)
        for chunk in response.iter_raw():
            size += len(chunk)
    return size, time.perf_counter() - began, cpu_seconds(server) - cpu


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_exports(name: str, http: httpx.Client, server: psutil.Process,
                    rounds: int) -> None:
    print(f"\n{name}: exports, {rounds} rounds each (median wall to the last "
          f"byte; target <= {EXPORT_TARGET_S:.0f} s)")
    print(f"  {'export':<28} {'bytes':>12} {'median':>8} {'worst':>8} {'server CPU':>11}")
    runs: dict[str, list[tuple[int, float, float]]] = {path: [] for path in EXPORTS.values()}
    for _ in range(rounds):  # interleaved, so a busy minute hits them all
        for path in EXPORTS.values():
            runs[path].append(download(http, path, server))
    for label, path in EXPORTS.items():
        sizes = {size for size, _, _ in runs[path]}
        assert len(sizes) == 1, f"{label}: sizes differ between rounds: {sizes}"
        wall = [seconds for _, seconds, _ in runs[path]]
        cpu = statistics.median(used for _, _, used in runs[path])
        print(f"  {label:<28} {sizes.pop():>12,} {statistics.median(wall):>7.2f}s "
              f"{max(wall):>7.2f}s {cpu:>10.2f}s  "
              f"{'ok' if statistics.median(wall) <= EXPORT_TARGET_S else 'SLOW'}")


def measure(name: str, base_url: str, token: str, server: psutil.Process,
            args: argparse.Namespace) -> None:
    with httpx.Client(base_url=base_url, timeout=600) as http:
        log_in(http, token)
        http.headers["Authorization"] = f"Bearer {token}"
        if args.export_rounds:
            measure_exports(name, http, server, args.export_rounds)
        print(f"\n{name}: reads, {args.rounds} rounds each (target < {READ_TARGET_MS:.0f} ms)")
        print(f"  {'request':<28} {'median':>9} {'p95':>9} {'worst':>9} {'CPU/req':>9}")
        times: dict[str, list[float]] = {path: [] for path in READS.values()}
        cpu: dict[str, float] = dict.fromkeys(READS.values(), 0.0)
        for path in READS.values():
            assert http.get(path).status_code == 200  # warm: templates, caches
        for _ in range(args.rounds):
            for path in READS.values():
                used = cpu_seconds(server)
                began = time.perf_counter()
                answer = http.get(path)
                times[path].append((time.perf_counter() - began) * 1000)
                cpu[path] += cpu_seconds(server) - used
                assert answer.status_code == 200, (path, answer.status_code)
        for label, path in READS.items():
            p95 = percentile(times[path], 0.95)
            print(f"  {label:<28} {statistics.median(times[path]):>7.1f}ms {p95:>7.1f}ms "
                  f"{max(times[path]):>7.1f}ms {1000 * cpu[path] / args.rounds:>7.1f}ms  "
                  f"{'ok' if p95 < READ_TARGET_MS else 'SLOW'}")


def run_backend(name: str, database_url: str | None, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="warden-bench-") as directory:
        data_dir = Path(directory) / "data"
        settings = ServerSettings(data_dir=data_dir, database_url=database_url)
        token = initialize(settings).admin_token
        assert token is not None
        print(f"{name}: seeding ...", file=sys.stderr)
        seed(settings.resolved_database_url, args.agents, args.findings)
        with running_server(data_dir, database_url) as (base_url, pid):
            measure(name, base_url, token, psutil.Process(pid), args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=120_000)
    parser.add_argument("--agents", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=30, help="stats and overview requests")
    parser.add_argument("--export-rounds", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("WARDEN_TEST_DATABASE_URL"))
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if not args.skip_sqlite:
        run_backend("SQLite", None, args)
    if args.database_url:
        with postgres_schema(args.database_url) as url:
            run_backend("PostgreSQL", url, args)
    print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
