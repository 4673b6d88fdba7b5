"""A fleet: 100,000 simulated agents against three server processes behind HAProxy.

On PostgreSQL (--database-url or WARDEN_TEST_DATABASE_URL, in a schema of its own,
dropped afterwards) the script initialises a server, seeds the agents straight into
the database (enrolling 100,000 over HTTP would take longer than the run), starts
three `warden server run` processes on it and Debian's HAProxy in front of them
from deploy/haproxy.cfg, then for --seconds sends through HAProxy only:

- check-ins in an open loop at agents / interval per second (1,667/s for 100,000
  agents every 60 s), latency counted from each request's scheduled start, so a
  falling-behind generator or server cannot hide its queue; the latency from the
  moment a request was actually sent is printed beside it;
- event batches from 1 % of the agents a minute (a failed batch is sent again, as
  an agent does from its spool); at the end the events table must hold every event;
- an administrator loading the overview, violations and findings pages in turn.

It prints achieved rates, latencies, errors by kind, events sent and stored, each
server process's CPU and CPU ms per request, and agents per core. The generator
shares the machine's cores with the servers: server CPU per request is the figure
that compares between machines.
Run: .venv/bin/python bench/fleet.py [--agents 100000] [--seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
from dashboard_pages import log_in
from fleet_cluster import proxy_news, running_cluster, usage
from fleet_report import PAGES, Run, Traffic, report
from load_database import checkin_body, finding_batch, postgres_schema, seed_agents
from load_http import Pool
from server_load import _run

from server import db
from server.bootstrap import initialize
from server.settings import ServerSettings

REQUEST_TIMEOUT_S = 30.0
BATCH_ATTEMPTS = 5  # then the batch counts as not delivered (an agent would keep trying)
RETRY_AFTER_S = 1.0
# Consecutive batches come from agents this far apart, so a minute's batches come
# from distinct agents (a prime: no common factor with the fleet size).
AGENT_STRIDE = 7919
PAGE_ROUNDS_ALONE = 5


Send = Callable[[int], Awaitable[str | None]]


async def call(pool: Pool, method: str, path: str, headers: dict[str, str], body: bytes,
               expect: int) -> str | None:
    """None if the answer was `expect`, else what went wrong, as a short kind."""
    try:
        status, _ = await asyncio.wait_for(pool.request(method, path, headers, body),
                                           REQUEST_TIMEOUT_S)
    except TimeoutError:
        return f"no answer in {REQUEST_TIMEOUT_S:.0f} s"
    except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as error:
        return f"connection: {type(error).__name__}"  # IndexError: no status line
    return None if status == expect else f"HTTP {status}"


async def open_loop(traffic: Traffic, rate: float, seconds: float, workers: int,
                    send: Send) -> None:
    """Slot n starts at n / rate, whether or not earlier ones were answered; at most
    `workers` in flight. Slots not yet started at the end count as scheduled, not sent."""
    traffic.scheduled = int(seconds * rate)
    start = time.perf_counter()
    slots = itertools.count()

    async def worker() -> None:
        for slot in slots:
            scheduled = start + slot / rate
            now = time.perf_counter()
            if slot >= traffic.scheduled or now >= start + seconds:
                return
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            sent = time.perf_counter()
            traffic.sent += 1
            error = await send(slot)
            done = time.perf_counter()
            if error is not None:
                traffic.errors[error] += 1
                continue
            traffic.from_schedule.latencies_ms.append((done - scheduled) * 1000)
            traffic.from_send.latencies_ms.append((done - sent) * 1000)

    await asyncio.gather(*(worker() for _ in range(workers)))
    traffic.from_schedule.seconds = traffic.from_send.seconds = seconds


async def dashboard(base_url: str, cookies: httpx.Cookies, pages: dict[str, Traffic],
                    seconds: float, every: float) -> None:
    """One administrator: the next page every `every` seconds (or when the last one came)."""
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base_url, cookies=cookies,
                                 timeout=REQUEST_TIMEOUT_S) as http:
        for path in itertools.cycle(PAGES):
            began = time.perf_counter()
            if began >= deadline:
                return
            traffic = pages[path]
            traffic.sent += 1
            try:
                answer = await http.get(path)
                problem = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
            except httpx.HTTPError as error:
                problem = f"connection: {type(error).__name__}"
            if problem is None:
                traffic.from_send.latencies_ms.append((time.perf_counter() - began) * 1000)
            else:
                traffic.errors[problem] += 1
            await asyncio.sleep(max(0.0, began + every - time.perf_counter()))


async def load_average(samples: list[float], seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        samples.append(os.getloadavg()[0])
        await asyncio.sleep(10)


async def fleet_traffic(run: Run, proxy_url: str, tokens: list[str], cookies: httpx.Cookies,
                        args: argparse.Namespace) -> None:
    pool = Pool(proxy_url, size=args.connections)
    headers = [{"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
               for token in tokens]
    try:
        async with httpx.AsyncClient(base_url=proxy_url) as http:
            etag = (await http.get("/api/v1/agent/policy", headers=headers[0])).headers["etag"]
        body = checkin_body(etag)

        async def checkin(slot: int) -> str | None:
            return await call(pool, "POST", "/api/v1/agent/checkin",
                              headers[slot % len(headers)], body, 200)

        async def post_batch(slot: int) -> str | None:
            first = slot * args.batch_events + 1
            events = finding_batch(range(first, first + args.batch_events))
            data = json.dumps({"events": events}).encode()
            run.batches.events_sent += len(events)
            agent = headers[slot * AGENT_STRIDE % len(headers)]
            for attempt in range(BATCH_ATTEMPTS):
                error = await call(pool, "POST", "/api/v1/agent/events", agent, data, 200)
                if error is None:
                    run.batches.events_acknowledged += len(events)
                    return None
                if attempt + 1 < BATCH_ATTEMPTS:
                    run.batches.errors[f"{error} (sent again)"] += 1
                    await asyncio.sleep(RETRY_AFTER_S)
            return f"{error} (not delivered)"

        rate = args.agents / args.interval
        batch_rate = args.agents * args.batch_share / args.interval
        await asyncio.gather(
            open_loop(run.checkins, rate, args.seconds, args.connections, checkin),
            open_loop(run.batches, batch_rate, args.seconds, 64, post_batch),
            dashboard(proxy_url, cookies, run.pages, args.seconds, args.page_every),
            load_average(run.loads, args.seconds))
    finally:
        pool.close()


def pages_alone(proxy_url: str, cookies: httpx.Cookies, pages: dict[str, Traffic],
                rounds: int) -> None:
    """The same pages with no agent traffic: their latency unloaded, and (from the
    servers' CPU meanwhile) what a page costs, to tell the agents' share of the run."""
    with httpx.Client(base_url=proxy_url, cookies=cookies, timeout=REQUEST_TIMEOUT_S) as http:
        for _ in range(rounds):
            for path in PAGES:
                began = time.perf_counter()
                status = http.get(path).status_code
                if status == 200:
                    pages[path].from_send.latencies_ms.append(
                        (time.perf_counter() - began) * 1000)
                else:
                    pages[path].errors[f"HTTP {status}"] += 1


def measure(url: str, args: argparse.Namespace) -> Run:
    run = Run(args.agents, args.interval, args.seconds, Traffic("check-in"),
              Traffic(f"event batch ({args.batch_events} events)"),
              {path: Traffic(f"page {path}") for path in PAGES},
              {path: Traffic(f"page {path}, alone") for path in PAGES})
    with tempfile.TemporaryDirectory(prefix="warden-fleet-") as tmp:
        data_dir = Path(tmp) / "data"
        init = initialize(ServerSettings(data_dir=data_dir, database_url=url))
        assert init.admin_token
        began = time.perf_counter()
        tokens = seed_agents(url, args.agents)
        print(f"seeded {args.agents:,} agents in {time.perf_counter() - began:.1f} s",
              file=sys.stderr)
        with running_cluster(data_dir, url, args.processes) as cluster:
            with httpx.Client(base_url=cluster.proxy_url, timeout=REQUEST_TIMEOUT_S) as client:
                log_in(client, init.admin_token)  # a TestClient is an httpx.Client
                cookies = client.cookies
            print(f"{args.processes} servers behind HAProxy at {cluster.proxy_url}; "
                  f"running {args.seconds:.0f} s ...", file=sys.stderr)
            before = usage(cluster)
            _run(fleet_traffic(run, cluster.proxy_url, tokens, cookies, args))
            run.usage = usage(cluster).minus(before)
            run.proxy_news = proxy_news(cluster)
            print("the pages alone ...", file=sys.stderr)
            before = usage(cluster)
            pages_alone(cluster.proxy_url, cookies, run.pages_alone, PAGE_ROUNDS_ALONE)
            run.pages_alone_usage = usage(cluster).minus(before)
        engine = db.create_engine(url)
        with engine.connect() as connection:
            run.events_stored = connection.execute(sa.text("SELECT count(*) FROM events")
                                                   ).scalar_one()
            run.findings_stored = connection.execute(sa.text("SELECT count(*) FROM findings")
                                                     ).scalar_one()
        engine.dispose()
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between "
                        "an agent's check-ins")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the run")
    parser.add_argument("--processes", type=int, default=3, help="server processes")
    parser.add_argument("--connections", type=int, default=256,
                        help="connections to HAProxy, so check-ins in flight at most")
    parser.add_argument("--batch-share", type=float, default=0.01,
                        help="share of the agents posting an event batch per interval")
    parser.add_argument("--batch-events", type=int, default=10, help="events per batch")
    parser.add_argument("--page-every", type=float, default=3.0,
                        help="seconds between the administrator's page loads")
    parser.add_argument("--database-url", default=os.environ.get("WARDEN_TEST_DATABASE_URL"))
    args = parser.parse_args()
    if not args.database_url:
        parser.error("several server processes share PostgreSQL: give --database-url "
                     "or set WARDEN_TEST_DATABASE_URL")
    with postgres_schema(args.database_url) as url:
        run = measure(url, args)
    print(report(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
