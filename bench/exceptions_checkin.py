"""What exceptions add to the check-in, the server's hot path (every agent, every minute).

A check-in answer now carries the agent's signed exceptions: one indexed query for the
exceptions in force for the agent or its group, one for the recent answers to its
requests, and one Ed25519 signature. This times that part alone (`document_for` +
`sign`, as server.api.agent does it) on a real SQLite file, for a fleet of AGENTS agents
in GROUPS groups with EXCEPTIONS exceptions in force (half for machines, half for
groups) and as many decided requests, and prints the median and 99th percentile per
check-in. Then it times whole check-ins (POST /api/v1/agent/checkin in process).

Run: .venv/bin/python bench/exceptions_checkin.py [--agents 2000] [--exceptions 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from server.app import create_app
from server.bootstrap import initialize
from server.db import utcnow
from server.models import Agent, ExceptionRequest
from server.settings import ServerSettings
from server.store import exceptions


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--exceptions", type=int, default=1000)
    parser.add_argument("--checkins", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = ServerSettings(data_dir=Path(folder), database_url=f"sqlite:///{folder}/w.db")
        result = initialize(settings)
        app = create_app(settings)
        with TestClient(app) as client:
            context = app.state.context
            now = utcnow()
            ids = [str(uuid.uuid4()) for _ in range(args.agents)]
            with context.write_sessions() as session:
                for index, agent_id in enumerate(ids):
                    session.add(Agent(id=agent_id, hostname=f"desk-{index:05d}",
                                      machine_id=agent_id, os="linux", os_version="12",
                                      arch="x86_64", agent_version="1", user="",
                                      group=f"group-{index % args.groups}",
                                      token_hash=uuid.uuid4().hex))
                session.flush()
                for index in range(args.exceptions):
                    scope = exceptions.Scope(agent_id=ids[index * 7 % args.agents]) \
                        if index % 2 else exceptions.Scope(group=f"group-{index % args.groups}")
                    exceptions.grant(session, "telegram" if index % 3 else "whatsapp", scope,
                                     now + dt.timedelta(days=1 + index % 300), "bench",
                                     "bench", now)
                    session.add(ExceptionRequest(
                        event_id=str(uuid.uuid4()), agent_id=ids[index % args.agents],
                        app="telegram", days=30, reason="bench", requested_by="u",
                        requested_at=now, status="denied", decided_at=now, comment=""))
                session.commit()
            samples, queries, builds, signs = [], [], [], []
            for index in range(args.checkins):
                with context.read_sessions() as session:
                    agent = session.get(Agent, ids[index * 13 % args.agents])
                    assert agent is not None
                    started = time.perf_counter()
                    exceptions.in_force_for(session, agent.id, agent.group, utcnow())
                    queries.append(time.perf_counter() - started)
            print(f"exceptions in force for one agent (the query): {_percentiles(queries)}")
            for index in range(args.checkins):
                started = time.perf_counter()
                with context.read_sessions() as session:
                    agent = session.get(Agent, ids[index * 13 % args.agents])
                    assert agent is not None
                    built = time.perf_counter()
                    document = exceptions.document_for(session, agent, utcnow()).model_dump(
                        mode="json")
                    builds.append(time.perf_counter() - built)
                signed = time.perf_counter()
                context.signer.sign(document)
                signs.append(time.perf_counter() - signed)
                samples.append(time.perf_counter() - started)
            print(f"document: {_percentiles(builds)}; signature: {_percentiles(signs)}")
            print(f"{args.agents} agents, {args.groups} groups, {args.exceptions} exceptions "
                  f"in force: signed exceptions per check-in: {_percentiles(samples)}")
            secret = result.enroll_secret
            assert secret is not None
            enrolled = client.post("/api/v1/agent/enroll", headers={
                "Authorization": f"Bearer {secret}"}, json={
                "hostname": "bench", "machine_id": "bench-machine", "os": "linux",
                "os_version": "12", "arch": "x86_64", "agent_version": "1"}).json()
            headers = {"Authorization": f"Bearer {enrolled['agent_token']}"}
            whole = []
            for _ in range(args.checkins):
                started = time.perf_counter()
                answer = client.post("/api/v1/agent/checkin", json={}, headers=headers)
                whole.append(time.perf_counter() - started)
                assert answer.status_code == 200 and answer.json()["exceptions"]
            print(f"whole check-in (in-process HTTP, SQLite): {_percentiles(whole)}")


if __name__ == "__main__":
    main()
