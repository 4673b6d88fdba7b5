"""The database side of bench/server_load.py and bench/fleet.py: a schema per run,
agent-like event rows, the raw DB-API executemany baselines, and seeding many agents or
findings at once."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from server import db
from server.crypto import hashing
from server.models import Agent, Finding

BATCH_EVENTS = 50
# The Ed25519 public key (base64) simulated agents send in each check-in.
MACHINE_KEY = "A" * 42 + "E="


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A schema of its own for this run, dropped afterwards."""
    schema = f"warden_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def finding(pid: int, kind: str = "finding_opened") -> dict[str, Any]:
    """One event as the agent sends it: a Telegram process opened (or gone)."""
    return {
        "id": str(uuid.uuid4()), "type": kind,
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "finding": {"key": f"telegram|process|pid:{pid}:1000.00", "app": "telegram",
                    "verdict": "deny", "action": "notify", "sensor": "process",
                    "evidence": {"pid": pid, "create_time": 1000.0, "name": "telegram-desktop",
                                 "exe": "/usr/bin/telegram-desktop",
                                 "cmdline": ["/usr/bin/telegram-desktop"], "username": "bench"},
                    "alternative": "signal", "confidence": "high",
                    "message": "Telegram is not allowed", "matched": "process.names"},
    }


def finding_batch(pids: range) -> list[dict[str, Any]]:
    """Events as an agent's batch: mostly new findings, a fifth resolving an earlier one."""
    return [finding(pid) if pid % 5 else finding(pid - 1, "finding_resolved") for pid in pids]


def checkin_body(etag: str) -> bytes:
    """A healthy agent's check-in, on the policy `etag` names, with its machine key (bound
    at the first check-in, then kept)."""
    status = {"spool_depth": 0, "dropped_events": 0, "open_findings": 1,
              "cpu_percent": 0.3, "rss_bytes": 40_000_000, "uptime_seconds": 3600}
    return json.dumps({"policy_version": etag.strip('"'), "status": status,
                       "public_key": MACHINE_KEY}).encode()


def raw_executemany(database_url: str, agent_id: str, events: int) -> float:
    """Events per second for a DB-API executemany of agent-like rows, a commit per batch."""
    engine = db.create_engine(database_url)
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            postgres = engine.dialect.name == "postgresql"
            mark = "%s" if postgres else "?"
            statement = (
                'INSERT INTO events (id, agent_id, type, time, received_at, finding_key, '
                f'payload) VALUES ({", ".join([mark] * 6)}, '
                f'{mark + "::jsonb" if postgres else mark})')
            began = time.perf_counter()
            for start in range(0, events, BATCH_EVENTS):
                now = dt.datetime.now(dt.UTC)
                stamp: Any = now if postgres else now.replace(tzinfo=None).isoformat(" ")
                rows = []
                for pid in range(start, min(start + BATCH_EVENTS, events)):
                    event = finding(10**8 + pid)
                    rows.append((event["id"], agent_id, event["type"], stamp, stamp,
                                 event["finding"]["key"], json.dumps(event)))
                if not postgres:
                    cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(statement, rows)
                connection.commit()
            return events / (time.perf_counter() - began)
        finally:
            connection.close()
    finally:
        engine.dispose()


def raw_ingest_rows(database_url: str, agent_id: str, events: int) -> float:
    """Events per second for DB-API executemany of every row ingest writes for such a
    batch, a commit per batch: the events, a finding per opened event (resolved already
    when the batch resolves it, as the server stores it) and the violation's upsert —
    values computed in Python beforehand, none read back."""
    engine = db.create_engine(database_url)
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            postgres = engine.dialect.name == "postgresql"
            mark = "%s" if postgres else "?"
            json_mark = mark + "::jsonb" if postgres else mark
            insert_events = (
                'INSERT INTO events (id, agent_id, type, time, received_at, finding_key, '
                f'payload) VALUES ({", ".join([mark] * 6)}, {json_mark})')
            insert_findings = (
                'INSERT INTO findings (agent_id, key, app, sensor, verdict, action, status, '
                'first_seen, last_seen, resolved_at, count, evidence, alternative, '
                f'confidence, message, matched, triage) VALUES ({", ".join([mark] * 11)}, '
                f'{json_mark}, {", ".join([mark] * 5)})')
            upsert_violation = (
                'INSERT INTO violations (agent_id, app, status, first_seen, last_seen, '
                'opened_at, findings, open_findings, sensor_counts, triage) VALUES '
                f'({", ".join([mark] * 8)}, {json_mark}, {mark}) '
                'ON CONFLICT (agent_id, app) DO UPDATE SET last_seen = excluded.last_seen, '
                'findings = violations.findings + excluded.findings, '
                'open_findings = violations.open_findings + excluded.open_findings, '
                'sensor_counts = excluded.sensor_counts')
            began = time.perf_counter()
            total = 0
            for start in range(0, events, BATCH_EVENTS):
                now = dt.datetime.now(dt.UTC)
                stamp: Any = now if postgres else now.replace(tzinfo=None).isoformat(" ")
                batch = finding_batch(range(10**8 + start + 1,
                                            10**8 + min(start + BATCH_EVENTS, events) + 1))
                resolved = {event["finding"]["key"] for event in batch
                            if event["type"] == "finding_resolved"}
                event_rows = [(event["id"], agent_id, event["type"], stamp, stamp,
                               event["finding"]["key"], json.dumps(event)) for event in batch]
                finding_rows = []
                for event in batch:
                    if event["type"] != "finding_opened":
                        continue
                    info = event["finding"]
                    closed = info["key"] in resolved
                    finding_rows.append((
                        agent_id, info["key"], info["app"], info["sensor"], info["verdict"],
                        info["action"], "resolved" if closed else "open", stamp, stamp,
                        stamp if closed else None, 1, json.dumps(info["evidence"]),
                        info["alternative"], info["confidence"], info["message"],
                        info["matched"], "new"))
                total += len(finding_rows)
                open_rows = sum(row[6] == "open" for row in finding_rows)
                if not postgres:
                    cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(insert_events, event_rows)
                cursor.executemany(insert_findings, finding_rows)
                cursor.execute(upsert_violation, (
                    agent_id, "telegram", "open", stamp, stamp, stamp, len(finding_rows),
                    open_rows, json.dumps({"process": total}), "new"))
                connection.commit()
            return events / (time.perf_counter() - began)
        finally:
            connection.close()
    finally:
        engine.dispose()


def seed_findings(database_url: str, agent_ids: list[str], count: int) -> float:
    """`count` findings spread over the agents and the last 30 days; seconds taken."""
    engine = db.create_engine(database_url)
    now = dt.datetime.now(dt.UTC)
    apps = ("telegram", "telegram", "telegram", "discord", "whatsapp")
    sensors = ("process", "installed", "network")
    began = time.perf_counter()
    rows = []
    for n in range(count):
        seen = now - dt.timedelta(seconds=n * 26)  # 100,000 findings span ~30 days
        rows.append({
            "agent_id": agent_ids[n % len(agent_ids)], "app": apps[n % len(apps)],
            "sensor": sensors[n % 3], "key": f"seed|{n}", "verdict": "deny",
            "action": "notify", "status": "open" if n % 4 else "resolved",
            "first_seen": seen - dt.timedelta(hours=1), "last_seen": seen,
            "resolved_at": None if n % 4 else seen, "count": 1,
            "evidence": {"pid": n, "name": "telegram-desktop"}, "alternative": "signal",
            "confidence": "high", "message": "", "matched": "", "triage": "new"})
    with db.session_factory(db.writer(engine))() as session:
        for start in range(0, count, 5000):
            session.execute(sa.insert(Finding), rows[start:start + 5000])
        session.commit()
    seconds = time.perf_counter() - began
    engine.dispose()
    return seconds


def seed_agents(database_url: str, count: int) -> list[str]:
    """`count` enrolled agents stored as enrollment stores them (the token's SHA-256, a
    machine key already bound); their tokens, in clear. Enrolling this many over HTTP
    would take longer than the run that uses them."""
    engine = db.create_engine(database_url)
    now = dt.datetime.now(dt.UTC)
    tokens = [hashing.new_token(hashing.AGENT_TOKEN_PREFIX) for _ in range(count)]
    rows = [{"id": str(uuid.uuid4()), "hostname": f"fleet-{n:06d}",
             "machine_id": f"fleet-{uuid.uuid4().hex}", "os": "linux",
             "os_version": "Debian 12", "arch": "x86_64", "agent_version": "0.1.0",
             "user": "bench", "group": None, "token_hash": hashing.hash_token(token),
             "enrolled_at": now, "last_seen": now, "public_key": MACHINE_KEY,
             "key_proven_at": now}
            for n, token in enumerate(tokens)]
    with db.session_factory(db.writer(engine))() as session:
        for start in range(0, count, 5000):
            session.execute(sa.insert(Agent), rows[start:start + 5000])
        session.commit()
    engine.dispose()
    return tokens
