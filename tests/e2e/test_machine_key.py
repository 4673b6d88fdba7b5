"""A stolen enrollment secret plus a machine id no longer takes the machine over, end to
end: a real `warden server run`, a real `warden-agent run`, and an attacker who has only
the secret and what every viewer sees in `GET /api/v1/agents`.

The attacker is held for approval and given no token; the real agent keeps its token,
keeps reporting, and is the one that resolves its finding. The same machine, reinstalled
with a new key, waits for an administrator, says so, and enrolls by itself once approved
with `warden agents approve-reenroll`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from typing import Any

import pytest
import requests

from agent.host.machine import KEY_FILE, MachineKey
from agent.state import StateDir
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import BIN, AgentProcess, WardenServer
from tests.e2e.test_agent_service import SYNC, finding_for
from tests.e2e.test_readmission import agent_token, checkin_status, new_token_of

pytestmark = pytest.mark.slow


def attacker_enroll(server: WardenServer, facts: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/agent/enroll", json=facts, timeout=10,
                         headers={"Authorization": f"Bearer {server.enroll_secret}"})


def admin_cli(server: WardenServer, *argv: str) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith("WARDEN_")}
    env.update(WARDEN_URL=server.url, WARDEN_TOKEN=server.admin_token)
    done = subprocess.run([str(BIN / "warden"), *argv], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


def test_a_stolen_secret_and_machine_id_do_not_take_over_a_running_agent(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    agent_id = wait_for(lambda: agent.status().get("agent_id"), SYNC, "enrollment")
    token = agent_token(agent)
    assert token is not None
    key_file = agent.state_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    listed = server.api(f"agents/{agent_id}")
    assert listed["public_key"] == MachineKey.load_or_create(StateDir(agent.state_dir)).public_key
    telegram = fake.start("telegram-desktop")
    opened = wait_for(lambda: finding_for(server, telegram.pid, status="open"), SYNC,
                      "an open finding in the server API")

    # The attacker: the secret, and the victim's machine id as any viewer sees it.
    stolen = {"hostname": "attacker", "machine_id": listed["machine_id"], "os": "linux",
              "os_version": "x", "arch": "x86_64", "agent_version": "0.1.0"}
    for body in (stolen, {**stolen, **MachineKey.generate().proof(listed["machine_id"])}):
        held = attacker_enroll(server, body)
        assert held.status_code == 409, held.text
        assert held.json()["error"]["code"] == "reenrollment_pending"
        assert "agent_token" not in held.text
    pending = server.api(f"agents/{agent_id}")["reenrollment"]
    assert (pending["hostname"], pending["keys_seen"]) == ("attacker", 2)

    # The victim carries on: its token works, and it (not the attacker) resolves its finding.
    assert checkin_status(server, token) == 200
    fake.stop(telegram)
    resolved = wait_for(lambda: finding_for(server, telegram.pid, status="resolved"), SYNC,
                        "the finding resolved by the real agent")
    assert resolved["id"] == opened["id"]
    assert agent_token(agent) == token
    assert "attacker" not in admin_cli(server, "agents", "list")
    assert admin_cli(server, "agents", "reject-reenroll", agent_id).startswith(
        f"re-enrollment of agent {agent_id} rejected")
    assert server.api(f"agents/{agent_id}")["reenrollment"] is None


def test_a_reinstalled_machine_waits_for_approval_and_then_enrolls_by_itself(
    server: WardenServer, make_agent: Any
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    agent_id = wait_for(lambda: agent.status().get("agent_id"), SYNC, "enrollment")
    old_token = agent_token(agent)
    assert old_token is not None
    agent.stop()
    # Its token lost, its key kept: the key proves the machine, no approval needed.
    (agent.state_dir / "identity.json").unlink()
    agent.start()
    token = wait_for(lambda: new_token_of(agent, old_token), SYNC, "re-enrolled by proof")
    assert json.loads((agent.state_dir / "identity.json").read_text())["agent_id"] == agent_id
    agent.stop()

    # Reinstalled from scratch: a new key, which an administrator must approve.
    shutil.rmtree(agent.state_dir)
    agent.start()
    waiting = wait_for(lambda: "approve-reenroll" in (agent.status().get("last_error") or ""),
                       SYNC, "the agent saying it waits for approval")
    assert waiting
    assert "waiting for an administrator" in agent.log.read_text()
    assert checkin_status(server, token) == 200  # the installed token works until then
    shown = admin_cli(server, "agents", "approve-reenroll", agent_id)
    assert f"re-enrollment of agent {agent_id} approved" in shown

    wait_for(lambda: agent_token(agent), SYNC, "the approved agent enrolled by itself")
    status = wait_for(lambda: (s := agent.status()).get("enrolled") and s, SYNC,
                      "the agent reporting itself enrolled")
    assert status["agent_id"] == agent_id
    assert checkin_status(server, token) == 401
    new_key = MachineKey.load_or_create(StateDir(agent.state_dir)).public_key
    assert server.api(f"agents/{agent_id}")["public_key"] == new_key
    actions = [entry["action"] for entry in server.api("audit")["items"]]
    assert actions[:3] == ["agent.reenroll", "agent.reenroll_approve", "agent.reenroll_pending"]
