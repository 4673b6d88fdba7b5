"""The agent as a service against a real server: detect, report, survive, enforce.

Every test runs `warden server run` and `warden-agent run` as real processes on
loopback and starts real processes under banned names.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections import Counter
from typing import Any

import pytest

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer

pytestmark = pytest.mark.slow

SYNC = 45.0  # enrollment + a check-in every 5 s (+ jitter) + upload


def finding_for(server: WardenServer, pid: int, **filters: str) -> dict[str, Any] | None:
    for item in server.findings(app="telegram", sensor="process", **filters):
        if item["evidence"].get("pid") == pid:
            return item
    return None


def spooled_open_findings(agent: AgentProcess) -> int:
    """How many findings the agent's spool holds as reported open (read-only peek)."""
    path = agent.state_dir / "spool.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT COUNT(*) FROM open_findings").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def event_types(server: WardenServer, finding_id: int) -> Counter[str]:
    detail = server.api(f"findings/{finding_id}")
    return Counter(event["type"] for event in detail["events"])


def test_a_fake_telegram_opens_a_finding_and_resolves_it(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")
    telegram = fake.start("telegram-desktop")
    opened = wait_for(lambda: finding_for(server, telegram.pid, status="open"), SYNC,
                      "an open finding in the server API")
    assert opened["verdict"] == "deny"
    assert opened["alternative"] == "signal"
    assert opened["evidence"]["exe"].endswith("/telegram-desktop")
    fake.stop(telegram)
    resolved = wait_for(lambda: finding_for(server, telegram.pid, status="resolved"), SYNC,
                        "the finding resolved after the process exited")
    assert resolved["id"] == opened["id"]
    # The user was told, with the approved alternative and where to get it.
    notice = wait_for(agent.notices, SYNC, "a desktop notification")[0]
    text = " ".join(notice)
    assert "Telegram" in text and "Signal" in text
    assert "https://signal.org/download/" in text
    # The notification itself was reported as an action on the finding (uploaded after the
    # notifier returned, so it may be a moment behind the notice).
    wait_for(lambda: event_types(server, opened["id"])["action"] >= 1, SYNC,
             "the notification reported as an action on the finding")


def test_an_outage_loses_nothing_and_duplicates_nothing(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")
    server.stop()
    pids = []
    for _ in range(5):
        process = fake.start("Telegram")
        pids.append(process.pid)
        wait_for(lambda: agent.status().get("spool_depth", 0) > 0, SYNC, "a spooled event")
        fake.stop(process)
    wait_for(lambda: agent.status().get("spool_depth", 0) >= 10, SYNC,
             "opened and resolved events of five processes in the spool")
    server.start()
    wait_for(lambda: agent.status().get("spool_depth") == 0, SYNC, "the spool drained")
    for pid in pids:
        finding = wait_for(lambda pid=pid: finding_for(server, pid), SYNC, f"finding of {pid}")
        assert finding["status"] == "resolved"
        types = event_types(server, finding["id"])
        assert types["finding_opened"] == 1 and types["finding_resolved"] == 1, types


def test_kill_9_during_uploads_loses_nothing_and_duplicates_nothing(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent(upload_batch_events="3")
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")
    processes = [fake.start("telegram-desktop") for _ in range(12)]
    # Kill as soon as the agent has spooled all 12 (a process that lives and dies
    # wholly while the agent is down cannot be seen): their uploads are in flight.
    wait_for(lambda: spooled_open_findings(agent) >= 12, SYNC, "all 12 spooled")
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    for process in processes[:6]:
        fake.stop(process)  # these end while the agent is down
    agent.start()
    for process in processes:
        wait_for(lambda process=process: finding_for(server, process.pid), SYNC,
                 f"finding of {process.pid}")
    wait_for(lambda: all(finding_for(server, p.pid, status="resolved") for p in processes[:6]),
             SYNC, "findings of processes that ended during the outage resolved")
    wait_for(lambda: agent.status().get("spool_depth") == 0, SYNC, "the spool drained")
    for process in processes:
        finding = finding_for(server, process.pid)
        assert finding is not None
        types = event_types(server, finding["id"])
        # One opening: the restarted agent remembered what it had reported.
        assert types["finding_opened"] == 1, (process.pid, types)
        assert types["finding_resolved"] == (1 if process in processes[:6] else 0), types
        assert finding["count"] == 1


def test_sigterm_stops_cleanly_with_the_spool_intact(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment")
    server.stop()
    fake.start("ayugram-desktop")
    wait_for(lambda: agent.status().get("spool_depth", 0) >= 1, SYNC, "a spooled event")
    assert agent.stop(signal.SIGTERM) == 0
    assert agent.status()["spool_depth"] >= 1
    server.start()


def _tamper_active_bundle(server: WardenServer) -> None:
    """Change the served bundle behind the signature's back, as an attacker in the DB would."""
    db = sqlite3.connect(server.data_dir / "warden.db")
    try:
        number, bundle_text = db.execute(
            "SELECT number, bundle FROM policy_versions ORDER BY number DESC LIMIT 1"
        ).fetchone()
        bundle = json.loads(bundle_text)
        bundle["rules"]["telegram"]["verdict"] = "allow"
        bundle["version"] = "f" * 64
        db.execute("UPDATE policy_versions SET bundle = ?, version = ? WHERE number = ?",
                   (json.dumps(bundle), bundle["version"], number))
        db.commit()
    finally:
        db.close()


def test_a_tampered_bundle_is_refused_and_the_previous_policy_stays(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    agent: AgentProcess = make_agent()
    agent.start()
    status = wait_for(lambda: (s := agent.status()).get("policy_version") and s, SYNC,
                      "the signed policy applied")
    good_version = status["policy_version"]
    server.stop()
    _tamper_active_bundle(server)
    server.start()
    refused = wait_for(lambda: (s := agent.status()).get("policy_error") and s, SYNC,
                       "the agent refusing the tampered bundle")
    assert "signature" in refused["policy_error"]
    assert refused["policy_version"] == good_version
    telegram = fake.start("telegram-desktop")
    finding = wait_for(lambda: finding_for(server, telegram.pid, status="open"), SYNC,
                       "Telegram still denied under the previous policy")
    assert finding["verdict"] == "deny"


ENFORCE = """
name: enforce
mode: {mode}
rules:
  - app: telegram
    verdict: deny
    action: terminate
    alternative: signal
    message: Telegram is not allowed here.
  - app: signal
    verdict: allow
"""


def _push_and_activate(server: WardenServer, text: str) -> str:
    number, version = server.push_policy(text)
    server.api(f"policies/{number}/activate", method="POST")
    return version


@pytest.mark.parametrize("mode", ["enforce", "audit"])
def test_enforce_terminates_and_reports_audit_does_not(
    server: WardenServer, make_agent: Any, fake: FakeProcesses, mode: str
) -> None:
    version = _push_and_activate(server, ENFORCE.format(mode=mode))
    agent: AgentProcess = make_agent()
    agent.start()
    wait_for(lambda: agent.status().get("policy_version") == version, SYNC,
             f"the {mode} policy applied")
    telegram = fake.start("telegram-desktop")
    finding = wait_for(lambda: finding_for(server, telegram.pid), SYNC, "the finding")

    def terminate_action() -> dict[str, Any] | None:
        detail = server.api(f"findings/{finding['id']}")
        for event in detail["events"]:
            if event["type"] == "action" and event["payload"]["result"]["action"] == "terminate":
                return dict(event["payload"]["result"])
        return None

    result = wait_for(terminate_action, SYNC, "the terminate action reported")
    if mode == "enforce":
        assert result["ok"] is True, result
        telegram.wait(timeout=SYNC)
        assert telegram.returncode is not None
    else:
        assert result["ok"] is False and "audit mode" in result["detail"]
        assert telegram.poll() is None, "audit mode must never terminate"


def test_install_service_dry_run_names_the_unit() -> None:
    from tests.e2e.conftest import BIN

    result = subprocess.run([str(BIN / "warden-agent"), "install-service", "--dry-run",
                             "--server-url", "https://warden.example.org"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "warden-agent.service" in result.stdout
    assert "CPUQuota" in result.stdout
