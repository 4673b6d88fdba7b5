"""A replayed older policy, end to end: a real server and a real agent process.

The attacker's tool is the one the tampered-bundle test uses: the server's
database. Here it is not edited but rolled back to a recorded earlier state —
exactly the earlier signed answer (bundle, signature, activation), as a stale
mirror or anyone replaying a recorded response would serve it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer
from tests.e2e.test_agent_service import SYNC, finding_for

pytestmark = pytest.mark.slow

ALLOW_TELEGRAM = """
name: telegram-allowed
rules:
  - app: telegram
    verdict: allow
"""
STATE = ("active_policy_number", "previous_policy_number", "activation_serial",
         "activation", "activation_signature")


def read_state(server: WardenServer) -> tuple[Any, ...]:
    db = sqlite3.connect(f"file:{server.data_dir / 'warden.db'}?mode=ro", uri=True)
    try:
        return tuple(db.execute(f"SELECT {', '.join(STATE)} FROM server_state").fetchone())
    finally:
        db.close()


def restore_state(server: WardenServer, state: tuple[Any, ...]) -> None:
    db = sqlite3.connect(server.data_dir / "warden.db")
    try:
        db.execute(f"UPDATE server_state SET {', '.join(f'{c} = ?' for c in STATE)}", state)
        db.commit()
    finally:
        db.close()


def policy_is(agent: AgentProcess, version: str) -> bool:
    return bool(agent.status().get("policy_version") == version)


def test_an_older_signed_policy_is_refused_and_an_admin_rollback_is_taken(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    denying = wait_for(lambda: agent.status().get("policy_version"), SYNC,
                       "the stock policy applied")
    allow_number, allowing = server.push_policy(ALLOW_TELEGRAM)
    server.api(f"policies/{allow_number}/activate", method="POST")
    agent.check_in_now()  # not waiting for the next check-in
    wait_for(lambda: policy_is(agent, allowing), SYNC, "the Telegram-allowing policy applied")
    recorded = read_state(server)  # the signed answer that allowed Telegram
    server.api("policies/1/activate", method="POST")  # Telegram denied again
    agent.check_in_now()  # not waiting for the next check-in
    wait_for(lambda: policy_is(agent, denying), SYNC, "the stock policy applied again")

    server.stop()
    restore_state(server, recorded)
    server.start()
    agent.check_in_now()  # not waiting out the backoff the outage started
    refused = wait_for(lambda: (s := agent.status()).get("policy_error") and s, SYNC,
                       "the agent refusing the replayed policy")
    assert "older than serial" in refused["policy_error"]
    assert refused["policy_version"] == denying
    in_force = refused["policy_serial"]
    assert in_force > recorded[STATE.index("activation_serial")]
    telegram = fake.start("telegram-desktop")
    finding = wait_for(lambda: finding_for(server, telegram.pid, status="open"), SYNC,
                       "Telegram still denied under the policy in force")
    assert finding["verdict"] == "deny"

    # The admin puts back the policy agents run: nothing is refused any more.
    server.api("policies/rollback", method="POST")
    agent.check_in_now()  # not waiting for the next check-in
    wait_for(lambda: not agent.status().get("policy_error"), SYNC, "the refusal cleared")
    # Rolling back to the older, Telegram-allowing version is the admin's decision: it is
    # signed with a new, higher serial, and the agent takes it.
    server.api("policies/rollback", method="POST")
    agent.check_in_now()  # not waiting for the next check-in
    status = wait_for(lambda: (s := agent.status()).get("policy_version") == allowing and s,
                      SYNC, "the admin's rollback applied")
    assert not status.get("policy_error")
    assert status["policy_serial"] > in_force
