"""Event ingest, one batch at a time, in process: CPU ms per 50-event batch, and a profile.

The batches are bench/server_load.py's (new Telegram process findings, one event in
five resolving the previous pid's), posted through the real app with an in-process
client to agents enrolled on a fresh server: SQLite in a temporary folder, and
PostgreSQL in a schema of its own when WARDEN_TEST_DATABASE_URL or --database-url is
given. CPU is this process's (the client's share of it is small: building and
encoding the body), so the figure is a ceiling of the server's own.

Run: PYTHONPATH=. .venv/bin/python bench/ingest_batch.py [--batches 200]
     [--profile 25]   # also print the 25 costliest functions by their own time
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from fastapi.testclient import TestClient
from load_database import BATCH_EVENTS, finding, postgres_schema

from server.app import create_app
from server.bootstrap import initialize
from server.settings import ServerSettings

AGENTS = 20
WARM_UP = 10
T = TypeVar("T")
_RUN_SYNC = anyio.to_thread.run_sync


def batches(count: int) -> list[bytes]:
    bodies = []
    pid = 1
    for _ in range(count):
        events = []
        for _ in range(BATCH_EVENTS):
            events.append(finding(pid) if pid % 5 else finding(pid - 1, "finding_resolved"))
            pid += 1
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def measure(database_url: str | None, count: int, profile_rows: int) -> list[float]:
    """CPU ms of each batch after the warm-up; prints the profile when asked."""
    with tempfile.TemporaryDirectory(prefix="warden-ingest-") as tmp:
        settings = ServerSettings(data_dir=Path(tmp) / "data", database_url=database_url)
        secret = initialize(settings).enroll_secret
        assert secret is not None
        bodies = batches(count + WARM_UP)
        with TestClient(create_app(settings)) as client:
            headers = [_enroll(client, secret, index) for index in range(AGENTS)]
            profiler = cProfile.Profile()
            if profile_rows:
                # cProfile sees one thread: run the app's worker-thread calls inline, in the
                # client's event-loop thread, and profile that thread.
                anyio.to_thread.run_sync = _inline  # type: ignore[assignment]
            cpu_ms = []
            for index, body in enumerate(bodies):
                if index == WARM_UP and profile_rows:
                    assert client.portal is not None
                    client.portal.call(_enable, profiler)
                began = time.process_time()
                answer = client.post("/api/v1/agent/events", content=body,
                                     headers=headers[index % AGENTS])
                spent = (time.process_time() - began) * 1000
                if answer.status_code != 200:
                    raise RuntimeError(f"events answered {answer.status_code}: {answer.text}")
                if index >= WARM_UP:
                    cpu_ms.append(spent)
            if profile_rows:
                assert client.portal is not None
                client.portal.call(_disable, profiler)
                anyio.to_thread.run_sync = _RUN_SYNC  # type: ignore[assignment]
        if profile_rows:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(
                profile_rows)
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumtime").print_stats(
                profile_rows)
    return cpu_ms


async def _inline(function: Callable[..., T], *args: Any, **_: Any) -> T:
    return function(*args)


async def _enable(profiler: cProfile.Profile) -> None:
    profiler.enable()


async def _disable(profiler: cProfile.Profile) -> None:
    profiler.disable()


def _enroll(client: TestClient, secret: str, index: int) -> dict[str, str]:
    answer = client.post("/api/v1/agent/enroll", headers={"Authorization": f"Bearer {secret}"},
                         json={"hostname": f"bench-{index:03d}", "machine_id": uuid.uuid4().hex,
                               "os": "linux", "os_version": "Debian 12", "arch": "x86_64",
                               "agent_version": "0.1.0", "user": "bench"})
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['agent_token']}",
            "Content-Type": "application/json"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="print a cProfile of the measured batches (ROWS functions)")
    parser.add_argument("--database-url", default=os.environ.get("WARDEN_TEST_DATABASE_URL"))
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.batches <= 5000:
        parser.error("keep it bounded: 1-5000 batches")
    runs: list[tuple[str, list[float]]] = []
    if not args.skip_sqlite:
        runs.append(("SQLite", measure(None, args.batches, args.profile)))
    if args.database_url:
        with postgres_schema(args.database_url) as url:
            runs.append(("PostgreSQL", measure(url, args.batches, args.profile)))
    load = os.getloadavg()
    print(f"\n{args.batches} batches of {BATCH_EVENTS} events, {AGENTS} agents, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| database | CPU ms per batch, median | p90 | events/s of CPU |")
    print("| --- | ---: | ---: | ---: |")
    for name, cpu_ms in runs:
        median = statistics.median(cpu_ms)
        p90 = statistics.quantiles(cpu_ms, n=10)[-1]
        print(f"| {name} | {median:.2f} | {p90:.2f} | {BATCH_EVENTS / median * 1000:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
