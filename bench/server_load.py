"""Server load: simulated agents against one real `warden server run` process on loopback.

For SQLite, and for PostgreSQL when WARDEN_TEST_DATABASE_URL or --database-url
is given (in a schema of its own, dropped afterwards), the script initialises
a server in a temporary directory, starts it, enrolls N agents and measures:

- check-ins, 304 policy polls and event batches, each in a closed loop with a
  fixed number of requests in flight: requests/s, p50/p99 latency, events/s,
  and the server process's CPU use (100 % = one core);
- check-ins in an open loop at 333/s, the rate of 20,000 agents checking in
  every 60 s (latency counted from each request's scheduled start, so a
  stalled server cannot hide its queue);
- a raw DB-API `executemany` of the same event rows into the same database,
  batch for batch, and the ratio of the server's ingest rate to it; and a second
  baseline writing every row ingest writes for those batches (events, findings, the
  violation), with its ratio;
- with --findings (default 100,000), review-API reads over that many findings.

Load generation (asyncio + httpx) runs in this process, the server in another;
on a 2-core machine they share the CPU, so figures are a floor. Loopback only.
Run: .venv/bin/python bench/server_load.py [--agents 500] [--seconds 8]
     [--phases checkin,poll,events,open] [--findings 0]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa
from load_database import (
    BATCH_EVENTS,
    checkin_body,
    finding_batch,
    postgres_schema,
    raw_executemany,
    raw_ingest_rows,
    seed_findings,
)
from load_http import Pool
from load_report import PHASE_KINDS, TARGET_RATE, Backend, Phase, report

from server import db
from server.bootstrap import initialize
from server.settings import ServerSettings

# Generous: on this shared 2-core machine under a load of 30+, a start took over a minute.
START_TIMEOUT_S = 180
# Enrollment is not what this measures (it hashes, audits and writes several rows):
# a few at a time gets the agents enrolled without queueing behind one another.
ENROLL_CONCURRENCY = 8


# -- the server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_server(data_dir: Path, database_url: str | None,
                   settings: dict[str, str] | None = None,
                   command: Callable[[int], list[str]] | None = None
                   ) -> Iterator[tuple[str, int]]:
    """`warden server run` (or `command(port)`) in its own process, with `settings` as
    WARDEN_* variables; yields (base URL, pid)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("WARDEN_")}
    env.update(settings or {})
    if database_url:
        env["WARDEN_DATABASE_URL"] = database_url
    warden = Path(sys.executable).with_name("warden")
    argv = command(port) if command else [
        str(warden), "server", "run", "--data-dir", str(data_dir), "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(argv, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield base_url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the simulated agents -------------------------------------------------------------


async def enroll_all(pool: Pool, secret: str, count: int) -> list[dict[str, str]]:
    # A few at a time: enrollment is not what this measures (see ENROLL_CONCURRENCY).
    gate = asyncio.Semaphore(ENROLL_CONCURRENCY)

    async def one(index: int) -> dict[str, str]:
        facts = {"hostname": f"bench-{index:05d}", "machine_id": f"bench-{uuid.uuid4().hex}",
                 "os": "linux", "os_version": "Debian 12", "arch": "x86_64",
                 "agent_version": "0.1.0", "user": "bench"}
        async with gate:
            status, body = await pool.request("POST", "/api/v1/agent/enroll", {
                "Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
                json.dumps(facts).encode())
        if status != 201:
            raise RuntimeError(f"enroll answered {status}: {body[:200]!r}")
        return {"Authorization": f"Bearer {json.loads(body)['agent_token']}",
                "Content-Type": "application/json"}

    return list(await asyncio.gather(*(one(index) for index in range(count))))


Request = Callable[[int], Awaitable[tuple[bool, int]]]


async def closed_loop(name: str, seconds: float, concurrency: int, request: Request,
                      server: psutil.Process, until: Callable[[], bool] | None = None) -> Phase:
    """`concurrency` workers, each sending its next request as soon as one is answered,
    for `seconds` or until `until()` is true."""
    phase = Phase(name)
    deadline = time.perf_counter() + seconds

    async def worker(start: int) -> None:
        index = start
        while time.perf_counter() < deadline and not (until and until()):
            began = time.perf_counter()
            ok, events = await request(index)
            phase.latencies_ms.append((time.perf_counter() - began) * 1000)
            phase.errors += not ok
            phase.events += events if ok else 0
            index += concurrency

    cpu_before, began = server.cpu_times(), time.perf_counter()
    await asyncio.gather(*(worker(start) for start in range(concurrency)))
    phase.seconds = time.perf_counter() - began
    phase.cpu_percent = _cpu_percent(server, cpu_before, phase.seconds)
    return phase


async def open_loop(name: str, seconds: float, rate: float, request: Request,
                    server: psutil.Process, until: Callable[[], bool] | None = None) -> Phase:
    """Requests started on a fixed schedule, whether or not earlier ones were answered, for
    `seconds` or until `until()` is true; latency counts from each request's schedule."""
    phase = Phase(name)
    total = int(seconds * rate)
    start = time.perf_counter()

    async def one(index: int) -> None:
        scheduled = start + index / rate
        ok, events = await request(index)
        phase.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
        phase.errors += not ok
        phase.events += events if ok else 0

    cpu_before = server.cpu_times()
    tasks = []
    for index in range(total):
        if until and until():
            break
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - start
    phase.cpu_percent = _cpu_percent(server, cpu_before, phase.seconds)
    return phase


def _cpu_percent(server: psutil.Process, before: Any, seconds: float) -> float:
    after = server.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100 * used / seconds if seconds else 0.0


async def agent_load(base_url: str, secret: str, args: argparse.Namespace,
                     server: psutil.Process) -> list[Phase]:
    # Room for the open loop's backlog when the server falls behind.
    pool = Pool(base_url, size=max(args.concurrency, 256))
    try:
        agents = await enroll_all(pool, secret, args.agents)
        async with httpx.AsyncClient(base_url=base_url) as http:
            etag = (await http.get("/api/v1/agent/policy", headers=agents[0])).headers["etag"]
        body = checkin_body(etag)
        batches = itertools.count()

        async def checkin(index: int) -> tuple[bool, int]:
            code, _ = await pool.request("POST", "/api/v1/agent/checkin",
                                         agents[index % len(agents)], body)
            return code == 200, 0

        async def poll(index: int) -> tuple[bool, int]:
            code, _ = await pool.request("GET", "/api/v1/agent/policy", {
                **agents[index % len(agents)], "If-None-Match": etag})
            return code == 304, 0

        async def post_batch(index: int) -> tuple[bool, int]:
            first = next(batches) * BATCH_EVENTS + 1
            events = finding_batch(range(first, first + BATCH_EVENTS))
            code, _ = await pool.request("POST", "/api/v1/agent/events",
                                         agents[index % len(agents)],
                                         json.dumps({"events": events}).encode())
            return code == 200, len(events)

        runs: dict[str, Callable[[], Awaitable[Phase]]] = {
            "checkin": lambda: closed_loop("check-in", args.seconds, args.concurrency,
                                           checkin, server),
            "poll": lambda: closed_loop("policy poll (304)", args.seconds, args.concurrency,
                                        poll, server),
            "events": lambda: closed_loop(f"event batches ({BATCH_EVENTS}/batch)",
                                          args.seconds, max(4, args.concurrency // 4),
                                          post_batch, server),
            "open": lambda: open_loop(f"check-in at {TARGET_RATE:.0f}/s (open loop)",
                                      args.seconds, TARGET_RATE, checkin, server),
        }
        phases = []
        for kind in args.phases:
            phase = await runs[kind]()
            phase.kind = kind
            phases.append(phase)
        return phases
    finally:
        pool.close()


def review_reads(base_url: str, token: str, rounds: int) -> list[Phase]:
    """Latency of review-API reads: pages (first, filtered, deep), stats, a whole export."""
    headers = {"Authorization": f"Bearer {token}"}
    phases = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as http:
        for name, path in (("list, first page (100)", "/api/v1/findings"),
                           ("list, app+status filter", "/api/v1/findings?app=discord&status=open"),
                           ("list, host prefix", "/api/v1/findings?host=bench-0001*"),
                           ("list, by host order", "/api/v1/findings?order=host&limit=100"),
                           ("stats", "/api/v1/stats"),
                           ("agents, first page", "/api/v1/agents")):
            phase = Phase(name)
            for _ in range(rounds):
                began = time.perf_counter()
                response = http.get(path)
                phase.latencies_ms.append((time.perf_counter() - began) * 1000)
                phase.errors += response.status_code != 200
            phase.seconds = sum(phase.latencies_ms) / 1000
            phases.append(phase)
        deep = Phase("list, 20th page via cursor")
        cursor = None
        for page in range(20):
            began = time.perf_counter()
            body = http.get("/api/v1/findings", params={"limit": 100, "cursor": cursor}
                            if cursor else {"limit": 100}).json()
            if page == 19:
                deep.latencies_ms.append((time.perf_counter() - began) * 1000)
            cursor = body["next_cursor"]
        deep.seconds = sum(deep.latencies_ms) / 1000
        phases.append(deep)
        export = Phase("export, every finding (CSV)")
        began = time.perf_counter()
        with http.stream("GET", "/api/v1/findings/export?format=csv") as response:
            rows = sum(chunk.count(b"\n") for chunk in response.iter_bytes()) - 1
        export.latencies_ms.append((time.perf_counter() - began) * 1000)
        export.seconds = export.latencies_ms[0] / 1000
        export.events = rows
        phases.append(export)
    return phases


# -- one backend, and the report ----------------------------------------------------------


def run_backend(name: str, database_url: str | None, args: argparse.Namespace) -> Backend:
    backend = Backend(name)
    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = ServerSettings(data_dir=data_dir, database_url=database_url)
        init = initialize(settings)
        assert init.enroll_secret and init.admin_token
        url = settings.resolved_database_url
        with running_server(data_dir, database_url) as (base_url, pid):
            server = psutil.Process(pid)
            backend.phases = _run(agent_load(base_url, init.enroll_secret, args, server))
            engine = db.create_engine(url)
            with engine.connect() as connection:
                agent_ids = list(connection.execute(sa.text("SELECT id FROM agents")).scalars())
            engine.dispose()
            ingested = backend.phase("events")
            if ingested is not None:
                raw_events = max(ingested.events, BATCH_EVENTS * 20)
                backend.raw_events_per_second = raw_executemany(url, agent_ids[0], raw_events)
                # On another agent, under finding keys of its own (its violation exists).
                backend.raw_rows_per_second = raw_ingest_rows(url, agent_ids[1], raw_events)
            if args.findings:
                seconds = seed_findings(url, agent_ids, args.findings)
                print(f"  {name}: seeded {args.findings:,} findings in {seconds:.1f} s",
                      file=sys.stderr)
                backend.reads = review_reads(base_url, init.admin_token, args.read_rounds)
    return backend


def _run(coroutine: Awaitable[list[Phase]]) -> list[Phase]:
    try:
        import uvloop  # uvicorn[standard] brings it; a faster loop leaves more CPU to the server
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    return uvloop.run(coroutine)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--agents", type=int, default=500, help="simulated agents (enrolled)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--database-url", default=os.environ.get("WARDEN_TEST_DATABASE_URL"),
                        help="PostgreSQL to measure too (default: $WARDEN_TEST_DATABASE_URL)")
    parser.add_argument("--findings", type=int, default=100_000,
                        help="findings to seed for the review-API reads (0: skip)")
    parser.add_argument("--read-rounds", type=int, default=20)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--phases", type=_phase_list, default=list(PHASE_KINDS),
                        help=f"agent-API phases to run, comma-separated (default: "
                             f"{','.join(PHASE_KINDS)})")
    args = parser.parse_args()
    if not 1 <= args.agents <= 5000 or not 1 <= args.concurrency <= 256 \
            or not 1 <= args.seconds <= 60:
        parser.error("keep it bounded: 1-5000 agents, 1-256 in flight, 1-60 s a phase")
    backends = []
    if not args.skip_sqlite:
        print("measuring SQLite ...", file=sys.stderr)
        backends.append(run_backend("SQLite", None, args))
    if args.database_url:
        print("measuring PostgreSQL ...", file=sys.stderr)
        with postgres_schema(args.database_url) as url:
            backends.append(run_backend("PostgreSQL", url, args))
    report(backends, agents=args.agents, concurrency=args.concurrency, seconds=args.seconds,
           findings=args.findings, read_rounds=args.read_rounds)
    return 0


def _phase_list(text: str) -> list[str]:
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(PHASE_KINDS))
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(PHASE_KINDS)}; got {text!r}")
    return [kind for kind in PHASE_KINDS if kind in kinds]  # always in the usual order


if __name__ == "__main__":
    sys.exit(main())
