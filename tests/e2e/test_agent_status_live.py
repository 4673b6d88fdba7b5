"""`warden-agent status` against a running service and server: current after each upload
and check-in (not one interval behind), with the policy's version number."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer

pytestmark = pytest.mark.slow

SYNC = 45.0


def test_status_is_current_after_an_upload_and_names_the_policy_number(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    wait_for(lambda: agent.status().get("policy_number") == 1, SYNC,
             "the policy number after the first check-in")
    telegram = fake.start("telegram-desktop")
    wait_for(lambda: any(item["evidence"].get("pid") == telegram.pid
                         for item in server.findings(app="telegram", sensor="process")),
             SYNC, "the finding on the server")
    seen = time.time()
    # The upload is in the status within a moment, well inside the 5 s check-in interval
    # after which the old status file caught up.
    status = wait_for(lambda: (s := agent.status()).get("last_upload") and s, 3.0,
                      "the upload in `warden-agent status`")
    assert status["last_upload"] <= seen + 3.0
    assert status["uploaded_events"] >= 1
    fake.stop(telegram)
