"""bench/fleet.py seeds 100,000 agents straight into the database (bench/load_database.py
`seed_agents`) instead of enrolling them: such an agent must be what enrollment stores,
so its token checks in and polls like an enrolled agent's, and nobody else's does.
Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.models import Agent
from server.settings import ServerSettings

BENCH = Path(__file__).resolve().parents[2] / "bench"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def load_database(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The bench scripts import each other by bare name, run from their own folder.
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("load_database")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_seeded_agents_check_in_and_poll_like_enrolled_ones(
    client: TestClient, settings: ServerSettings, db: sessionmaker[Session],
    load_database: ModuleType,
) -> None:
    tokens = load_database.seed_agents(settings.resolved_database_url, 3)
    assert len(set(tokens)) == 3
    etag = client.get("/api/v1/agent/policy", headers=bearer(tokens[0])).headers["etag"]
    body = load_database.checkin_body(etag)
    for token in tokens:
        answer = client.post("/api/v1/agent/checkin", content=body,
                             headers={**JSON, **bearer(token)})
        assert answer.status_code == 200, answer.text
        poll = client.get("/api/v1/agent/policy",
                          headers={**bearer(token), "If-None-Match": etag})
        assert poll.status_code == 304, poll.text
    # A token one character off is nobody's.
    stranger = client.post("/api/v1/agent/checkin", content=body,
                           headers={**JSON, **bearer(tokens[0][:-1] + "x")})
    assert stranger.status_code == 401, stranger.text
    with db() as session:
        rows = session.execute(sa.select(Agent.hostname, Agent.public_key, Agent.status)
                               .order_by(Agent.hostname)).all()
    assert [row.hostname for row in rows] == ["fleet-000000", "fleet-000001", "fleet-000002"]
    # The key the check-ins send is the one seeded as bound; each check-in was recorded.
    assert {row.public_key for row in rows} == {load_database.MACHINE_KEY}
    assert all(row.status is not None and row.status["uptime_seconds"] == 3600 for row in rows)
