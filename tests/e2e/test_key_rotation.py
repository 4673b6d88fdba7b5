"""The policy-signing key, end to end with a real `warden server run` and real
`warden-agent run` processes: an admin rotates the key with the CLI while the server
runs, the enrolled agent moves to the new key by itself, and a policy signed by the new
key only is applied and enforced."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from server.crypto.signing import verify_bundle
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import BIN, AgentProcess, WardenServer
from tests.e2e.test_agent_service import SYNC, finding_for
from tests.e2e.test_policy_replay import policy_is

pytestmark = pytest.mark.slow

AFTER_ROTATION = """
name: after-rotation
rules:
  - app: telegram
    verdict: deny
    action: report
  - app: signal
    verdict: allow
"""


def warden(server: WardenServer, *args: str) -> str:
    done = subprocess.run([str(BIN / "warden"), "server", *args, "--data-dir",
                           str(server.data_dir)], capture_output=True, text=True,
                          env=server.env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def pinned_key(agent: AgentProcess) -> str | None:
    path: Path = agent.state_dir / "identity.json"
    if not path.exists():
        return None
    key: str = json.loads(path.read_text())["policy_public_key"]
    return key


def test_an_agent_follows_a_key_rotation_and_applies_a_policy_only_the_new_key_signed(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    stock = wait_for(lambda: agent.status().get("policy_version"), SYNC, "the stock policy")
    old = warden(server, "public-key").strip()
    assert pinned_key(agent) == old

    rotated: dict[str, Any] = json.loads(warden(server, "rotate-key", "--json"))
    new = rotated["public_key"]
    assert rotated["previous_public_key"] == old and new != old
    # No server restart: it signs with the new key file from its next request on.
    wait_for(lambda: pinned_key(agent) == new, SYNC, "the agent pinning the new key")
    status = agent.status()
    assert status["policy_version"] == stock and not status.get("policy_error")
    assert status["policy_serial"] == rotated["activation_serial"]
    assert status["policy_public_key"] == new

    number, version = server.push_policy(AFTER_ROTATION)
    server.api(f"policies/{number}/activate", method="POST")
    agent.check_in_now()  # not waiting for the next check-in
    signed = server.api(f"policies/{number}")
    assert verify_bundle(new, signed["bundle"], signed["signature"])
    assert not verify_bundle(old, signed["bundle"], signed["signature"])
    wait_for(lambda: policy_is(agent, version), SYNC, "the new-key policy applied")

    telegram = fake.start("telegram-desktop")
    finding = wait_for(lambda: finding_for(server, telegram.pid, status="open"), SYNC,
                       "Telegram reported under the new-key policy")
    assert finding["verdict"] == "deny" and finding["action"] == "report"

    # A restarted agent keeps the new key and starts from the new-key policy it cached.
    agent.stop()
    agent.start()
    wait_for(lambda: (s := agent.status()).get("last_checkin") and s.get("written_at"), SYNC,
             "the restarted agent checking in")
    status = agent.status()
    assert pinned_key(agent) == new
    assert status["policy_version"] == version and not status.get("policy_error")


def test_an_agent_configured_with_another_key_refuses_to_enroll(
    server: WardenServer, make_agent: Any
) -> None:
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                      PublicFormat.Raw)
    configured = base64.b64encode(stranger).decode()
    agent: AgentProcess = make_agent(policy_public_key=configured)
    agent.start()

    def attempted() -> dict[str, Any] | None:
        status = agent.status()
        return status if status.get("last_error") or status.get("enrolled") else None

    status = wait_for(attempted, SYNC, "an enrollment attempt")
    assert not status["enrolled"] and pinned_key(agent) is None
    assert "not enrolled" in status["last_error"] and configured in status["last_error"]
    assert "not enrolled" in agent.log.read_text()
