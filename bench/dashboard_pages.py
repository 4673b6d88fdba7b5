"""Dashboard page times with 100,000 findings in a SQLite database.

Fills a fresh data directory (2,000 agents, 100,000 findings over 60 days,
a third of them open), then asks each page through the whole ASGI stack
(session cookie, queries, templates) in process, and prints the median,
95th percentile and worst time per page. Target: < 200 ms per page.
Run: .venv/bin/python bench/dashboard_pages.py [--findings N] [--rounds R]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from server import db
from server.app import create_app
from server.bootstrap import initialize
from server.models import Agent, Finding
from server.settings import ServerSettings

TARGET_MS = 200.0
APPS = [("telegram", "deny", 0.8), ("whatsapp", "deny", 0.1), ("discord", "alert", 0.1)]
SENSORS = ["process", "process", "process", "installed", "network"]
TRIAGE = ["new"] * 8 + ["acknowledged", "resolved", "false_positive"]
BATCH = 10_000


def fill(engine: sa.Engine, agents: int, findings: int, now: dt.datetime, seed: int = 7) -> None:
    """Rows written with Core inserts: the point is the pages, not the ingest path."""
    rng = random.Random(seed)
    agent_rows = [{
        "id": str(uuid.UUID(int=rng.getrandbits(128))), "hostname": f"host-{index:05d}",
        "machine_id": f"machine-{index}", "os": rng.choice(["linux", "macos", "windows"]),
        "os_version": "bench", "arch": "x86_64", "agent_version": "0.1.0", "user": "bench",
        "group": rng.choice(["finance", "engineering", "sales", "hr", None]),
        "token_hash": uuid.uuid4().hex + uuid.uuid4().hex, "enrolled_at": now,
        "last_seen": now - dt.timedelta(seconds=rng.choice([5, 30, 90, 86_400])),
        "policy_version": None, "status": None, "revoked_at": None,
    } for index in range(agents)]
    with db.writer(engine).begin() as connection:
        connection.execute(sa.insert(Agent), agent_rows)
        rows: list[dict[str, Any]] = []
        for index in range(findings):
            app, verdict = _app(rng)
            first = now - dt.timedelta(seconds=rng.uniform(0, 60 * 86_400))
            last = min(now, first + dt.timedelta(seconds=rng.expovariate(1 / 7200)))
            status = "open" if rng.random() < 0.33 else "resolved"
            sensor = rng.choice(SENSORS)
            rows.append({
                "agent_id": agent_rows[rng.randrange(agents)]["id"], "app": app,
                "sensor": sensor, "key": f"{app}|{sensor}|pid:{index}", "verdict": verdict,
                "action": "notify", "status": status, "first_seen": first, "last_seen": last,
                "resolved_at": last if status == "resolved" else None, "count": 1,
                "evidence": {"pid": index, "exe": f"/usr/bin/{app}-desktop", "name": app},
                "alternative": "signal", "confidence": "high", "message": "", "matched": "",
                "triage": rng.choice(TRIAGE), "triage_comment": None, "triage_by": None,
                "triage_at": None,
            })
            if len(rows) == BATCH:
                connection.execute(sa.insert(Finding), rows)
                rows = []
        if rows:
            connection.execute(sa.insert(Finding), rows)
        connection.exec_driver_sql("ANALYZE")


def _app(rng: random.Random) -> tuple[str, str]:
    pick = rng.random()
    for app, verdict, share in APPS:
        if pick < share:
            return app, verdict
        pick -= share
    return APPS[0][0], APPS[0][1]


def log_in(client: TestClient, token: str) -> None:
    page = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    answer = client.post("/login", data={"csrf_token": csrf.group(1), "method": "token",
                                         "token": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text


def measure(client: TestClient, path: str, rounds: int) -> list[float]:
    client.get(path)  # warm: templates compiled, caches filled
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warden-bench-") as directory:
        settings = ServerSettings(data_dir=Path(directory) / "data")
        admin_token = initialize(settings).admin_token
        assert admin_token is not None
        engine = db.create_engine(settings.resolved_database_url)
        started = time.perf_counter()
        fill(engine, args.agents, args.findings, dt.datetime.now(dt.UTC))
        engine.dispose()
        print(f"filled {args.findings:,} findings on {args.agents:,} agents "
              f"in {time.perf_counter() - started:.1f} s (SQLite)")
        with TestClient(create_app(settings)) as client:
            log_in(client, admin_token)
            first = re.search(r'href="/findings/(\d+)"', client.get("/").text)
            pages = {
                "overview": "/",
                "findings (all, newest first)": "/findings",
                "findings (telegram, open)": "/findings?app=telegram&status=open",
                "findings (by host, A-Z)": "/findings?order=host&dir=asc",
                "findings (one host)": "/findings?host=host-00042",
                "findings (group, last 7 days)":
                    f"/findings?group=finance&since={dt.date.today() - dt.timedelta(days=7)}",
                "hosts": "/hosts",
                "one finding": f"/findings/{first.group(1) if first else 1}",
            }
            print(f"\n{'page':<32} {'median':>9} {'p95':>9} {'worst':>9}  "
                  f"target {TARGET_MS:.0f} ms")
            for name, path in pages.items():
                times = sorted(measure(client, path, args.rounds))
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                verdict = "ok" if p95 < TARGET_MS else "SLOW"
                print(f"{name:<32} {statistics.median(times):>7.1f}ms {p95:>7.1f}ms "
                      f"{times[-1]:>7.1f}ms  {verdict}")


if __name__ == "__main__":
    main()
