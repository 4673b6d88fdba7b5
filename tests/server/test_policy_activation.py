"""Signed activation serials against a real server over HTTP: every activation, rollbacks
included, signs a higher serial; an older signed policy served again (a replay, a stale
mirror, a database pointed back) is refused by the agent's own checks and by PolicySync.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from agent.state import (
    Activation,
    BundleRejected,
    StateDir,
    refuse_older,
    verify_activation,
    verify_bundle,
)
from agent.uplink.client import AgentClient, SignedBundle
from agent.uplink.sync import PolicySync, SyncStatus
from policies.wire import EnrollRequest
from server import db as server_db
from server.app import create_app
from server.models import ServerState
from server.settings import ServerSettings
from tests.server.admin_support import ALLOW_TELEGRAM, WIDER_POLICY
from tests.server.conftest import make_host_facts

DB = sessionmaker[Session]
STATE_COLUMNS = ("active_policy_number", "previous_policy_number", "activation_serial",
                 "activation", "activation_signature")


class Server:
    """The live server as an agent (AgentClient) and an admin (requests) see it."""

    def __init__(self, url: str, admin_token: str, enroll_secret: str) -> None:
        self.url = url
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.client = AgentClient(url, timeout=10)
        self.enrollment = self.client.enroll(
            enroll_secret, EnrollRequest.model_validate(make_host_facts()))

    def offered(self) -> tuple[dict[str, Any], Activation | None]:
        """GET policy, verified as an agent does: (bundle, activation)."""
        signed = self.client.fetch_policy(self.enrollment.agent_token, None)
        assert signed is not None
        return verified(signed, self.enrollment.policy_public_key)

    def push(self, text: str) -> int:
        response = requests.post(f"{self.url}/api/v1/policies", data=text.encode(), timeout=10,
                                 headers={**self.admin, "Content-Type": "application/yaml"})
        assert response.status_code == 201, response.text
        number: int = response.json()["version_number"]
        return number

    def admin_post(self, path: str) -> None:
        response = requests.post(f"{self.url}/api/v1/{path}", headers=self.admin, timeout=10)
        assert response.status_code == 200, response.text


def verified(signed: SignedBundle, key: bytes) -> tuple[dict[str, Any], Activation | None]:
    bundle = verify_bundle(signed.bundle, signed.signature, key)
    return bundle, verify_activation(signed.activation, signed.activation_signature, key,
                                     bundle)


@pytest.fixture
def server(live_server: str, admin_token: str, enroll_secret: str) -> Iterator[Server]:
    server = Server(live_server, admin_token, enroll_secret)
    yield server
    server.client.close()


def state_row(db: DB) -> dict[str, Any]:
    with db() as session:
        state = session.get(ServerState, 1)
        assert state is not None
        return {name: getattr(state, name) for name in STATE_COLUMNS}


def write_state(db: DB, **values: Any) -> None:
    with db() as session:
        session.execute(sa.update(ServerState).where(ServerState.id == 1).values(**values))
        session.commit()


def test_the_policy_answer_carries_a_signed_activation_of_that_bundle(server: Server) -> None:
    bundle, activation = server.offered()
    assert activation is not None and activation.serial > 0
    assert activation.version == bundle["version"]
    assert activation.document["purpose"] == "warden.policy-activation"
    assert "T" in activation.activated_at and activation.activated_at.endswith("+00:00")


def test_every_activation_rollbacks_included_signs_a_higher_serial(server: Server) -> None:
    answers = [server.offered()]
    second = server.push(ALLOW_TELEGRAM)
    for path in (f"policies/{second}/activate", f"policies/{second}/activate",
                 "policies/rollback", "policies/rollback"):
        server.admin_post(path)
        answers.append(server.offered())
    activations = [activation for _, activation in answers]
    assert all(activation is not None for activation in activations)
    serials = [activation.serial for activation in activations if activation]
    assert serials == sorted(set(serials)), serials
    # The rollback serves the first bundle again, under a newer serial.
    assert answers[3][0] == answers[0][0]
    for older, newer in itertools.pairwise(activations):
        refuse_older(newer, older)  # an agent takes each in turn
        with pytest.raises(BundleRejected, match="older than serial"):
            refuse_older(older, newer)  # and never goes back


def test_a_database_pointed_at_another_version_or_an_old_activation_is_refused(
    server: Server, db: DB
) -> None:
    second = server.push(WIDER_POLICY)
    old = state_row(db)
    server.admin_post(f"policies/{second}/activate")
    _, in_force = server.offered()
    # Pointing the active version back without the server signing it: the activation is
    # for another bundle.
    write_state(db, active_policy_number=1)
    with pytest.raises(BundleRejected, match="another bundle version"):
        server.offered()
    # Restoring the whole old activation: validly signed, but older than the one in force.
    write_state(db, **old)
    _, replayed = server.offered()
    assert replayed is not None and in_force is not None
    with pytest.raises(BundleRejected, match="older than serial"):
        refuse_older(replayed, in_force)


def test_serials_stay_above_those_agents_saw_after_a_database_restore(
    server: Server, db: DB
) -> None:
    _, before = server.offered()
    assert before is not None
    write_state(db, activation_serial=5)  # e.g. a restored backup taken long ago
    server.admin_post("policies/1/activate")
    _, after = server.offered()
    assert after is not None and after.serial > before.serial
    refuse_older(after, before)


def test_policy_sync_keeps_the_highest_serial_and_refuses_a_replayed_policy(
    server: Server, db: DB, tmp_path: Path, enroll_secret: str
) -> None:
    applied: list[str] = []

    def policy_sync() -> PolicySync:
        state, status = StateDir(tmp_path / "agent"), SyncStatus()
        identity = state.load_identity()
        if identity is not None:  # as the daemon starts: the cached policy is in force
            cached = state.load_policy(identity.policy_public_key)
            status.policy_version = cached["version"] if cached else None
        return PolicySync(AgentClient(server.url, timeout=10), state,
                          facts=make_host_facts, enroll_secret=lambda: enroll_secret,
                          apply_bundle=lambda bundle: applied.append(bundle["version"]),
                          agent_status=dict, status=status)

    sync = policy_sync()
    sync.sync_once()
    first = server.offered()[0]["version"]
    assert applied == [first] and sync.activation is not None
    allow = server.push(ALLOW_TELEGRAM)
    server.admin_post(f"policies/{allow}/activate")
    replay = state_row(db)  # what an attacker recorded: Telegram allowed
    sync.sync_once()
    allowed = server.offered()[0]["version"]
    assert applied == [first, allowed]
    server.admin_post("policies/rollback")  # an admin's rollback reaches the agent
    sync.sync_once()
    assert applied == [first, allowed, first]
    floor = sync.activation.serial
    assert floor > replay["activation_serial"]

    write_state(db, **replay)
    sync.sync_once()
    assert applied == [first, allowed, first], "the replayed policy was not applied"
    assert sync.status.policy_version == first
    assert "older than serial" in (sync.status.policy_error or "")
    # The floor is kept with the policy on disk: a restarted agent refuses it too.
    restarted = policy_sync()
    assert restarted.activation is not None and restarted.activation.serial == floor
    restarted.sync_once()
    assert "older than serial" in (restarted.status.policy_error or "")
    assert applied == [first, allowed, first]
    # The admin rolls back from the replayed version to the one agents run: nothing is
    # refused any more; and rolling back again, to the Telegram-allowing version, is the
    # admin's right: it is signed with a new serial, and taken.
    server.admin_post("policies/rollback")
    restarted.sync_once()
    assert restarted.status.policy_error is None
    assert applied == [first, allowed, first]
    server.admin_post("policies/rollback")
    restarted.sync_once()
    assert applied[-1] == allowed and restarted.status.policy_error is None
    assert restarted.activation is not None and restarted.activation.serial > floor
    for each in (sync, restarted):
        each.client.close()


def test_a_database_from_before_serials_signs_one_when_the_server_starts(
    settings: ServerSettings, initialized: Any, enroll_secret: str
) -> None:
    engine = server_db.create_engine(settings.resolved_database_url)
    try:
        with server_db.writer(engine).begin() as connection:
            config = server_db.alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        server_db.run_migrations(engine)  # what `warden server run` does after an upgrade
        with engine.connect() as connection:
            row = connection.execute(sa.text(
                "SELECT active_policy_number, activation_serial, activation FROM server_state"
            )).one()
        assert tuple(row) == (1, 0, None)
    finally:
        engine.dispose()
    with TestClient(create_app(settings)) as client:
        enrolled = client.post("/api/v1/agent/enroll", json=make_host_facts(),
                               headers={"Authorization": f"Bearer {enroll_secret}"}).json()
        body = client.get("/api/v1/agent/policy",
                          headers={"Authorization": f"Bearer {enrolled['agent_token']}"}).json()
    assert body["activation"]["serial"] > 0
    assert body["activation"]["version"] == body["bundle"]["version"]


def test_a_missing_activation_is_not_resigned_once_serials_were_issued(
    settings: ServerSettings, initialized: Any, enroll_secret: str
) -> None:
    app = create_app(settings)
    write_state(app.state.context.write_sessions, activation=None, activation_signature=None)
    # Someone with database access dropped the activation: the server does not sign
    # whatever is active now; agents that run a serial refuse the unsigned answer.
    with TestClient(app) as client:
        enrolled = client.post("/api/v1/agent/enroll", json=make_host_facts(),
                               headers={"Authorization": f"Bearer {enroll_secret}"}).json()
        body = client.get("/api/v1/agent/policy",
                          headers={"Authorization": f"Bearer {enrolled['agent_token']}"}).json()
    assert "activation" not in body
