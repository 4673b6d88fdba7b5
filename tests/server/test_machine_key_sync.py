"""The agent's PolicySync and its machine key against a real server over HTTP.

The key is made at the first enrollment, kept 0600 in the state dir and bound by
the server; the agent that lost its token re-enrolls by proving it; another state
dir claiming the same machine id is held until an administrator approves it (the
agent says so and backs off); an agent from before keys binds its key at its next
check-in. Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import base64
import datetime as dt
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker

from agent.host.machine import KEY_FILE, MachineKey
from agent.state import Identity, StateDir
from agent.uplink.client import AgentClient, ReenrollmentPending
from agent.uplink.sync import PolicySync, SyncStatus
from server.crypto.enrollment_proof import InvalidProof, verify
from server.models import Agent
from tests.server.conftest import make_host_facts

DB = sessionmaker[Session]


def make_sync(url: str, state_dir: Path, secret: str, facts: dict[str, Any],
              failures: list[str] | None = None) -> PolicySync:
    status = SyncStatus()
    return PolicySync(AgentClient(url, timeout=10), StateDir(state_dir), facts=lambda: facts,
                      enroll_secret=lambda: secret, apply_bundle=lambda bundle: None,
                      agent_status=dict, status=status,
                      on_failure=lambda: (failures if failures is not None else []).append(
                          status.last_error or ""))


def bound_key(db: DB, agent_id: str) -> str | None:
    with db() as session:
        row = session.get(Agent, agent_id)
        assert row is not None
        return row.public_key


def test_the_agent_makes_its_key_binds_it_and_proves_it_when_it_enrolls_again(
    live_server: str, enroll_secret: str, db: DB, tmp_path: Path,
) -> None:
    facts = make_host_facts(hostname="pc-key")
    sync = make_sync(live_server, tmp_path / "state", enroll_secret, facts)
    sync.sync_once()
    identity = sync.identity
    assert identity is not None
    key_file = tmp_path / "state" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert bound_key(db, identity.agent_id) == MachineKey.load_or_create(
        StateDir(tmp_path / "state")).public_key

    # The token is lost (the state dir's identity went): the key proves the machine.
    sync.state.forget_identity()
    again = make_sync(live_server, tmp_path / "state", enroll_secret, facts)
    again.sync_once()
    assert again.identity is not None and again.identity.agent_id == identity.agent_id
    assert again.identity.agent_token != identity.agent_token


def test_another_holder_of_the_machine_id_waits_for_approval_and_says_so(
    live_server: str, enroll_secret: str, admin_token: str, tmp_path: Path,
) -> None:
    facts = make_host_facts(hostname="pc-victim")
    victim = make_sync(live_server, tmp_path / "victim", enroll_secret, facts)
    victim.sync_once()
    assert victim.identity is not None
    failures: list[str] = []
    impostor = make_sync(live_server, tmp_path / "impostor", enroll_secret,
                         {**facts, "hostname": "pc-impostor"}, failures)
    with pytest.raises(ReenrollmentPending, match="waits for an administrator"):
        impostor.sync_once()
    delay = impostor._attempt()
    assert delay > 0 and not impostor.status.enrolled
    assert "approve-reenroll" in (impostor.status.last_error or "")
    assert failures and "approve-reenroll" in failures[-1]
    assert not (tmp_path / "impostor" / "identity.json").exists()
    # The victim carries on with its token.
    assert victim.sync_once() > 0

    # Approved, the waiting agent gets in at its next attempt (its key is bound).
    approved = requests.post(
        f"{live_server}/api/v1/agents/{victim.identity.agent_id}/reenrollment/approve",
        headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
    assert approved.status_code == 200, approved.text
    impostor.sync_once()
    assert impostor.identity is not None
    assert impostor.identity.agent_id == victim.identity.agent_id


def test_an_agent_enrolled_before_keys_binds_its_key_at_its_next_check_in(
    live_server: str, enroll_secret: str, enroll: Callable[..., Any], db: DB,
    tmp_path: Path,
) -> None:
    legacy = enroll(signed=False)
    assert bound_key(db, legacy.agent_id) is None
    sync = make_sync(live_server, tmp_path / "state", enroll_secret, legacy.facts)
    # The state dir as the old agent left it: an identity, no key.
    sync.state.save_identity(Identity(legacy.agent_id, legacy.token, live_server,
                                      base64.b64decode(legacy.public_key)))
    sync.identity = sync.state.load_identity()
    sync.sync_once()
    key = MachineKey.load_or_create(StateDir(tmp_path / "state"))
    assert bound_key(db, legacy.agent_id) == key.public_key


def test_the_proof_verifies_for_its_machine_only() -> None:
    key = MachineKey.generate()
    now = dt.datetime(2026, 2, 2, 12, 0, tzinfo=dt.UTC)
    body = key.proof("machine-1", now)
    proof = body["proof"]
    assert isinstance(proof, dict)
    checked = verify("machine-1", key.public_key, proof["signed_at"], proof["signature"])
    assert (checked.public_key, checked.signed_at) == (key.public_key, now)
    with pytest.raises(InvalidProof, match="does not verify"):
        verify("machine-2", key.public_key, proof["signed_at"], proof["signature"])
    with pytest.raises(InvalidProof, match="does not verify"):
        verify("machine-1", MachineKey.generate().public_key, proof["signed_at"],
               proof["signature"])
