"""A renamed Telegram Desktop, running, reaches the server as a content finding.

A real `warden server run` and `warden-agent run` (enrolled, stock policy); Debian's
real telegram-desktop copied to `notes` and run offscreen in a network namespace
with no network (`unshare -n`). The finding the admin API lists names the content
signature that matched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import wait_for
from tests.e2e.conftest import AgentProcess, WardenServer

TELEGRAM = Path("/usr/bin/telegram-desktop")
UNSHARE = shutil.which("unshare")
WAIT = 60.0


@pytest.mark.skipif(not TELEGRAM.is_file(),
                    reason="needs Debian's telegram-desktop (.ci/run installs it)")
def test_a_renamed_running_telegram_is_a_content_finding_on_the_server(
        tmp_path: Path, server: WardenServer, make_agent: Any) -> None:
    if UNSHARE is None or subprocess.run([UNSHARE, "-n", "true"], check=False).returncode:
        pytest.skip("needs unshare -n (root) to run Telegram without a network")
    agent: AgentProcess = make_agent()
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), WAIT, "enrollment")
    program = tmp_path / "tools/notes"
    program.parent.mkdir()
    shutil.copyfile(TELEGRAM, program)
    program.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    telegram = subprocess.Popen(
        [UNSHARE, "-n", str(program)], start_new_session=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
             "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def reported() -> list[dict[str, Any]]:
            return [item for item in server.findings(app="telegram")
                    if item["evidence"].get("pid") == telegram.pid]

        [finding] = wait_for(reported, WAIT, "the server to list the renamed Telegram")
        assert finding["sensor"] == "process"
        assert finding["evidence"]["exe"] == str(program)
        assert finding["evidence"]["content_signatures"]
        assert all(ref.startswith("telegram/")
                   for ref in finding["evidence"]["content_signatures"])
    finally:
        os.killpg(telegram.pid, signal.SIGKILL)
        telegram.wait()
