"""`warden-agent run` blocking Telegram at exec, for real, reported to a real server.

The agent runs in its own private mount namespace (`unshare -m`) with a tmpfs
of its own, so it guards only that namespace's mounts. The test execs a copy of
`sleep` named Telegram in that namespace (`nsenter`): it must fail with EPERM,
and the server must get the attempt with a `block` action naming the path, the
hash, the user and the parent program. The sensor health says `block: ok`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import wait_for
from tests.agent.test_blocking import REFUSAL
from tests.e2e.conftest import BIN, AgentProcess, WardenServer

SYNC = 60.0
POLICY = """
name: block-e2e
mode: enforce
rules:
  - app: telegram
    verdict: deny
    action: block
    alternative: signal
  - app: signal
    verdict: allow
"""

pytestmark = pytest.mark.skipif(REFUSAL is not None or shutil.which("nsenter") is None,
                                reason=REFUSAL or "needs nsenter(1)")


def test_the_agent_blocks_an_exec_and_the_server_hears_it(
    tmp_path: Path, server: WardenServer, make_agent: Any
) -> None:
    number, version = server.push_policy(POLICY)
    server.api(f"policies/{number}/activate", method="POST")
    guarded = tmp_path / "guarded"
    guarded.mkdir()
    agent: AgentProcess = make_agent()
    # unshare execs the shell, which execs the agent: one pid, inside the namespace.
    agent.command = ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                     f'mount -t tmpfs tmpfs "{guarded}" && cp /bin/sleep "{guarded}/Telegram"'
                     f' && exec "{BIN / "warden-agent"}" run']
    agent.start()
    assert agent.process is not None
    pid = agent.process.pid
    wait_for(lambda: agent.status().get("policy_version") == version, SYNC,
             "the blocking policy applied")
    wait_for(lambda: (agent.status().get("sensors") or {}).get("block", {}).get("state")
             == "ok", SYNC, "the blocker to start")

    def try_telegram() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(pid), "-m", "--",
                               str(guarded / "Telegram"), "0"],
                              capture_output=True, text=True, timeout=30)

    tried = try_telegram()
    assert tried.returncode != 0 and "Operation not permitted" in tried.stderr, tried
    # The same in the namespace, a harmless program runs.
    ok = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "/bin/true"], timeout=30)
    assert ok.returncode == 0

    def block_result() -> dict[str, Any] | None:
        for finding in server.findings(app="telegram"):
            if finding["evidence"].get("exe") != str(guarded / "Telegram"):
                continue
            for event in server.api(f"findings/{finding['id']}")["events"]:
                result = (event["payload"] or {}).get("result") or {}
                if event["type"] == "action" and result.get("action") == "block":
                    return dict(result)
        return None

    result = wait_for(block_result, SYNC, "the block action on the server")
    assert result["ok"] is True
    assert result["path"] == str(guarded / "Telegram")
    assert result["sha256"] == hashlib.sha256(Path("/bin/sleep").read_bytes()).hexdigest()
    assert result["user"] == "root"
    assert result["parent"] == os.path.realpath(shutil.which("nsenter") or "")
    # The user was told, with the recommendation.
    notices = wait_for(agent.notices, SYNC, "the notice")
    assert any("Signal" in " ".join(notice) for notice in notices), notices
    assert agent.stop() == 0


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_without_exec_events_the_agent_says_it_polls(
    tmp_path: Path, server: WardenServer, make_agent: Any
) -> None:
    # A PID namespace of its own, as in a container: the kernel sends this agent no exec
    # events. It must say `exec: fallback` in `warden-agent status` and its check-in.
    agent: AgentProcess = make_agent()
    agent.command = ["unshare", "-p", "-f", "--kill-child", "--mount-proc",
                     str(BIN / "warden-agent"), "run"]
    agent.start()
    def said(sensors: dict[str, Any] | None) -> dict[str, Any] | None:
        exec_health = (sensors or {}).get("exec") or {}
        return exec_health if "sends no exec events" in exec_health.get("detail", "") else None

    wait_for(lambda: said(agent.status().get("sensors")), SYNC,
             "the exec sensor's verdict in `warden-agent status`")
    status = agent.status()
    assert status["sensors"]["exec"]["state"] == "fallback"
    assert "polling" in status["sensors"]["exec"]["detail"]
    assert status["sensors"]["process"]["state"] == "ok"
    (host,) = server.api("agents")["items"]
    checkin = wait_for(lambda: said((server.api(f"agents/{host['id']}")["status"] or {}).get(
        "sensors")), SYNC, "the exec sensor in the check-in")
    assert checkin["state"] == "fallback"
    shown = subprocess.run([str(BIN / "warden-agent"), "status"], env=agent.env,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert any(line.startswith("sensor exec") and "fallback" in line
               for line in shown.splitlines()), shown
