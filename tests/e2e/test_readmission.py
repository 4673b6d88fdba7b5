"""Revoking and re-admitting a machine, end to end: a real server and a real agent process.

The agent keeps running throughout, as it would on a machine an administrator
revoked by mistake (or rebuilt): refused, it keeps trying to enroll with the secret
it holds; re-admitted, it enrolls back by itself as the same agent, with a new
token, and uploads what it saw meanwhile onto the same finding.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer
from tests.e2e.test_agent_service import SYNC, finding_for

pytestmark = pytest.mark.slow

REFUSED = "revoked by an administrator"


def agent_token(agent: AgentProcess) -> str | None:
    path = agent.state_dir / "identity.json"
    if not path.exists():
        return None
    token: str = json.loads(path.read_text())["agent_token"]
    return token


def new_token_of(agent: AgentProcess, old_token: str) -> str | None:
    """The agent's token once it is another than `old_token` (None meanwhile)."""
    token = agent_token(agent)
    return token if token != old_token else None


def checkin_status(server: WardenServer, token: str) -> int:
    return requests.post(f"{server.url}/api/v1/agent/checkin", json={}, timeout=10,
                         headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_revoked_machine_is_readmitted_and_its_agent_enrolls_back_as_itself(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    agent_id = wait_for(lambda: agent.status().get("agent_id"), SYNC, "enrollment")
    old_token = agent_token(agent)
    assert old_token is not None
    telegram = fake.start("telegram-desktop")
    opened = wait_for(lambda: finding_for(server, telegram.pid, status="open"), SYNC,
                      "an open finding in the server API")

    server.api(f"agents/{agent_id}/revoke", method="POST")
    # Telegram quits while the machine is revoked: the agent can only spool that.
    fake.stop(telegram)
    wait_for(lambda: REFUSED in (agent.status().get("last_error") or ""), SYNC,
             "the agent's enrollment refused (403 agent_revoked)")
    assert server.api(f"agents/{agent_id}")["state"] == "revoked"
    assert finding_for(server, telegram.pid, status="open") is not None

    readmitted = server.api(f"agents/{agent_id}/readmit", method="POST")
    assert readmitted["revoked_at"] is None
    assert checkin_status(server, old_token) == 401

    # The agent enrolls back by itself, with its secret: same id, a new token...
    new_token = wait_for(lambda: new_token_of(agent, old_token), SYNC,
                         "the agent enrolled again")
    status = wait_for(lambda: (s := agent.status()).get("enrolled") and s, SYNC,
                      "the agent reporting itself enrolled")
    assert status["agent_id"] == agent_id
    assert checkin_status(server, new_token) == 200
    assert checkin_status(server, old_token) == 401
    # ...and what it saw while revoked lands on the same finding.
    resolved = wait_for(lambda: finding_for(server, telegram.pid, status="resolved"), SYNC,
                        "the finding resolved by the spooled event")
    assert resolved["id"] == opened["id"]
    assert server.api(f"agents/{agent_id}")["state"] == "active"
    actions = [entry["action"] for entry in server.api("audit")["items"]]
    assert actions[:3] == ["agent.reenroll", "agent.readmit", "agent.revoke"]
