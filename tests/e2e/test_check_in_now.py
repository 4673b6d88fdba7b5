"""SIGUSR1 makes a running agent check in now: a pushed policy is in force at once, not
at the next check-in a minute later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.agent.conftest import wait_for
from tests.e2e.conftest import WardenServer, agent_factory

ALLOW_TELEGRAM = """
name: telegram-allowed
rules:
  - app: telegram
    verdict: allow
"""
# Well inside the 60 s check-in interval below: only the signal can make it in time.
QUICK = 20.0


def test_sigusr1_makes_the_agent_check_in_and_take_a_new_policy_now(tmp_path: Path) -> None:
    server = WardenServer(tmp_path / "server", tmp_path / "server.log",
                          env={"WARDEN_CHECKIN_INTERVAL_SECONDS": "60"})
    server.start()
    try:
        with agent_factory(tmp_path, server) as make:
            agent = make(process_interval="1")
            agent.start()
            first: Any = wait_for(lambda: agent.status().get("policy_version"), QUICK,
                                  "the first check-in")
            number, allowing = server.push_policy(ALLOW_TELEGRAM)
            server.api(f"policies/{number}/activate", method="POST")
            assert allowing != first
            agent.check_in_now()
            wait_for(lambda: agent.status().get("policy_version") == allowing, QUICK,
                     f"the new policy in force after SIGUSR1 ({agent.log})")
            assert agent.process is not None and agent.process.poll() is None
    finally:
        server.stop()
