"""The agent's PolicySync against a real server over HTTP: a configured policy key refuses
a server that does not prove it (part of ending trust on first use), and an enrolled agent
follows the server's signed key rotations to the new key, and only those.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.state import Identity, StateDir
from agent.uplink.client import AgentClient
from agent.uplink.sync import PolicySync, SyncStatus
from policies.compiler import canonical_json
from server.crypto.signing import PolicySigner
from server.settings import ServerSettings
from tests.server.admin_support import ALLOW_TELEGRAM, WIDER_POLICY, default_bundle
from tests.server.conftest import make_host_facts
from tests.server.test_key_rotation import DB, rotate

STRANGER = Ed25519PrivateKey.generate()
STRANGER_KEY = STRANGER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class Agent:
    """One agent's PolicySync on its own state dir, with what it applied and failed."""

    sync: PolicySync
    applied: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def pinned(self) -> str | None:
        identity = self.sync.state.load_identity()
        return b64(identity.policy_public_key) if identity else None


@dataclass
class Server:
    url: str
    admin_token: str
    enroll_secret: str
    settings: ServerSettings
    db: DB
    made: list[Agent] = field(default_factory=list)

    @property
    def key(self) -> str:
        return PolicySigner.load(self.settings.signing_key_path).public_key_b64

    def agent(self, state_dir: Path, trusted_key: bytes | None = None) -> Agent:
        """A PolicySync as the daemon builds one: the cached policy's version in force."""
        state, status = StateDir(state_dir), SyncStatus()
        identity = state.load_identity()
        if identity is not None:
            cached = state.load_policy(identity.policy_public_key)
            status.policy_version = cached["version"] if cached else None
        made = Agent(sync=None)  # type: ignore[arg-type]
        made.sync = PolicySync(
            AgentClient(self.url, timeout=10), state, facts=make_host_facts,
            enroll_secret=lambda: self.enroll_secret,
            apply_bundle=lambda bundle: made.applied.append(bundle["version"]),
            agent_status=dict, status=status, trusted_key=trusted_key,
            on_failure=lambda: made.failures.append(status.last_error or ""))
        self.made.append(made)
        return made

    def activate(self, text: str) -> str:
        admin = {"Authorization": f"Bearer {self.admin_token}"}
        pushed = requests.post(f"{self.url}/api/v1/policies", data=text.encode(), timeout=10,
                               headers={**admin, "Content-Type": "application/yaml"})
        assert pushed.status_code == 201, pushed.text
        number = pushed.json()["version_number"]
        activated = requests.post(f"{self.url}/api/v1/policies/{number}/activate",
                                  headers=admin, timeout=10)
        assert activated.status_code == 200, activated.text
        version: str = pushed.json()["version"]
        return version

    def agent_record(self, agent_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/v1/agents/{agent_id}", timeout=10,
                                headers={"Authorization": f"Bearer {self.admin_token}"})
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        return record


@pytest.fixture
def server(live_server: str, admin_token: str, enroll_secret: str, settings: ServerSettings,
           db: DB) -> Iterator[Server]:
    server = Server(live_server, admin_token, enroll_secret, settings, db)
    yield server
    for agent in server.made:
        agent.sync.client.close()


def stock_version() -> str:
    version: str = default_bundle()["version"]
    return version


# -- part 1: a configured key -----------------------------------------------------------


def test_a_server_whose_key_differs_from_the_configured_one_is_refused_at_enrollment(
    server: Server, tmp_path: Path
) -> None:
    agent = server.agent(tmp_path / "agent", trusted_key=STRANGER_KEY)
    delays = [agent.sync._attempt() for _ in range(3)]
    assert all(delay > 0 for delay in delays), "it keeps retrying, with backoff"
    assert len(agent.failures) == 3
    error = agent.sync.status.last_error or ""
    assert "not enrolled" in error and b64(STRANGER_KEY) in error and server.key in error
    assert "policy_public_key" in error
    assert agent.sync.status.enrolled is False and agent.pinned is None
    assert not (tmp_path / "agent" / "identity.json").exists()
    assert agent.applied == []

    # Configured with the key `warden server public-key` prints, it enrolls.
    right = server.agent(tmp_path / "agent", trusted_key=base64.b64decode(server.key))
    right.sync.sync_once()
    assert right.sync.status.enrolled and right.pinned == server.key
    assert right.applied == [stock_version()]


def test_a_state_dir_pinned_to_another_key_is_set_aside_and_enrolled_again(
    server: Server, tmp_path: Path
) -> None:
    # Enrolled earlier, on first use, with an impostor; and a policy signed by it.
    state = StateDir(tmp_path / "agent")
    state.save_identity(Identity("impostor-agent", "wag_impostor", server.url, STRANGER_KEY))
    bundle = default_bundle()
    state.save_policy(bundle, STRANGER.sign(canonical_json(bundle)))
    agent = server.agent(tmp_path / "agent", trusted_key=base64.b64decode(server.key))
    error = agent.sync.status.last_error or ""
    assert "set aside" in error and b64(STRANGER_KEY) in error
    assert agent.sync.identity is None and not (tmp_path / "agent" / "policy.json").exists()
    assert (tmp_path / "agent" / "identity.json.untrusted").exists()

    agent.sync.sync_once()
    assert agent.pinned == server.key and agent.sync.identity is not None
    assert agent.sync.identity.agent_id != "impostor-agent"
    # Fetched again although its version is the one "in force": verified with the right key.
    assert agent.applied == [] and agent.sync.activation is not None
    assert state.load_policy(base64.b64decode(server.key)) == bundle


def test_an_agent_configured_with_the_old_key_enrolls_after_rotations(
    server: Server, tmp_path: Path
) -> None:
    old = server.key
    rotate(server.settings, server.db)
    rotate(server.settings, server.db)
    agent = server.agent(tmp_path / "agent", trusted_key=base64.b64decode(old))
    agent.sync.sync_once()
    assert agent.pinned == server.key != old
    identity = agent.sync.state.load_identity()
    assert identity is not None and len(identity.key_rotations) == 2
    assert identity.trusted_from(base64.b64decode(old))  # and so it starts again, too
    assert agent.applied == [stock_version()]

    stranger = server.agent(tmp_path / "other", trusted_key=STRANGER_KEY)
    stranger.sync._attempt()
    assert stranger.pinned is None and "not enrolled" in (stranger.sync.status.last_error or "")


# -- part 2: following a rotation --------------------------------------------------------


def test_an_enrolled_agent_follows_a_rotation_then_takes_only_new_key_policies(
    server: Server, tmp_path: Path
) -> None:
    agent = server.agent(tmp_path / "agent")
    agent.sync.sync_once()
    old, first_serial = server.key, agent.sync.activation
    assert agent.pinned == old and first_serial is not None

    rotate(server.settings, server.db)
    new = server.key
    agent.sync.sync_once()  # the check-in names the new key: the policy is fetched
    assert agent.pinned == new and agent.sync.status.policy_error is None
    assert agent.applied == [stock_version()], "the same bundle is not applied again"
    assert agent.sync.activation is not None
    assert agent.sync.activation.serial > first_serial.serial
    agent.sync.sync_once()  # the key it reports at check-in: who has moved
    assert agent.sync.identity is not None
    status = server.agent_record(agent.sync.identity.agent_id)["status"]
    assert status["policy_public_key"] == new

    allowing = server.activate(ALLOW_TELEGRAM)
    agent.sync.sync_once()
    assert agent.applied == [stock_version(), allowing]
    # A restart keeps the new key and the serial floor.
    restarted = server.agent(tmp_path / "agent")
    assert restarted.pinned == new and restarted.sync.activation == agent.sync.activation


def test_an_agent_offline_through_two_rotations_follows_both(
    server: Server, tmp_path: Path
) -> None:
    agent = server.agent(tmp_path / "agent")
    agent.sync.sync_once()
    rotate(server.settings, server.db)
    rotate(server.settings, server.db)
    wider = server.activate(WIDER_POLICY)
    agent.sync.sync_once()
    assert agent.pinned == server.key
    assert agent.applied == [stock_version(), wider]


def test_a_stop_between_saving_the_policy_and_pinning_its_key_is_finished_at_start(
    server: Server, tmp_path: Path
) -> None:
    agent = server.agent(tmp_path / "agent")
    agent.sync.sync_once()
    old = agent.pinned
    rotate(server.settings, server.db)
    identity = agent.sync.identity
    assert identity is not None
    signed = agent.sync.client.fetch_policy(identity.agent_token, None)
    assert signed is not None and signed.activation_signature is not None
    # What _fetch_policy writes first; then the agent stops before identity.json.
    document = json.loads((tmp_path / "agent" / "policy.json").read_text())
    document.update(signature=b64(signed.signature), activation=signed.activation,
                    activation_signature=b64(signed.activation_signature),
                    key_rotations=list(signed.key_rotations))
    (tmp_path / "agent" / "policy.json").write_text(json.dumps(document))
    assert agent.pinned == old

    restarted = server.agent(tmp_path / "agent")
    assert restarted.pinned == server.key != old
    assert restarted.sync.activation is not None
    assert restarted.sync.activation.document == signed.activation


def test_a_key_replaced_without_a_rotation_is_not_followed(
    server: Server, tmp_path: Path
) -> None:
    agent = server.agent(tmp_path / "agent")
    agent.sync.sync_once()
    old = agent.pinned
    # A new key in place of the old with no statement signed by it: a lost key's recovery,
    # or an impostor. Nothing leads from the pinned key to it.
    PolicySigner.generate().install(server.settings.signing_key_path)
    agent.sync.sync_once()
    allowing = server.activate(ALLOW_TELEGRAM)
    agent.sync.sync_once()
    assert "does not verify" in (agent.sync.status.policy_error or "")
    assert agent.pinned == old and allowing not in agent.applied


def test_a_rotation_keeps_an_agent_configured_with_the_old_key_enrolled(
    server: Server, tmp_path: Path
) -> None:
    configured = base64.b64decode(server.key)
    agent = server.agent(tmp_path / "agent", trusted_key=configured)
    agent.sync.sync_once()
    rotate(server.settings, server.db)
    agent.sync.sync_once()
    assert agent.pinned == server.key and agent.sync.identity is not None
    agent_id = agent.sync.identity.agent_id
    # Restarted with the same (old) key configured: the pin is where its rotations lead.
    restarted = server.agent(tmp_path / "agent", trusted_key=configured)
    assert restarted.sync.status.last_error is None
    assert restarted.sync.identity is not None and restarted.sync.identity.agent_id == agent_id
    assert restarted.pinned == server.key
