"""The agent's log says what it did: a termination, one held back by audit mode, and a
notification that failed (no notify-send on the machine), in the log format it has."""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agent.responding.actions import ActionRunner
from agent.responding.enforce import terminate_tree
from agent.responding.notify_backends import LinuxNotifier
from tests.agent.test_actions import fake_telegram, finding_for, policy_bundle

__all__ = ["fake_telegram"]  # a fixture, imported for its name

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="spawns a copied /bin/sleep")


@pytest.fixture
def no_notify_send(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A PATH with nothing on it: the real Linux notifier looks for notify-send and fails.
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(record.levelname, record.getMessage()) for record in caplog.records
            if record.name == "warden.agent.actions"]


def test_enforce_logs_the_termination_and_the_failed_notification(
    fake_telegram: subprocess.Popen[str], no_notify_send: None, caplog: pytest.LogCaptureFixture
) -> None:

    bundle = policy_bundle("enforce", "terminate")
    runner = ActionRunner(LinuxNotifier(euid=lambda: 1000), lambda: bundle, "linux",
                          functools.partial(terminate_tree, grace_seconds=5.0))
    with caplog.at_level(logging.DEBUG, logger="warden.agent.actions"):
        notify, terminate = runner.handle(finding_for(bundle, fake_telegram))
    assert notify["ok"] is False and "notify-send not found" in notify["detail"]
    assert terminate["ok"] is True
    lines = _lines(caplog)
    assert lines[0][0] == "WARNING"
    assert lines[0][1].startswith("notify telegram failed: notify-send not found")
    assert lines[1][0] == "INFO"
    assert lines[1][1].startswith(f"terminated telegram pid {fake_telegram.pid}:")


def test_audit_mode_logs_what_it_would_have_done(
    fake_telegram: subprocess.Popen[str], no_notify_send: None, caplog: pytest.LogCaptureFixture
) -> None:

    bundle = policy_bundle("audit", "terminate")
    runner = ActionRunner(LinuxNotifier(euid=lambda: 1000), lambda: bundle, "linux")
    with caplog.at_level(logging.INFO, logger="warden.agent.actions"):
        runner.handle(finding_for(bundle, fake_telegram))
    assert ("INFO", "would have terminated telegram (audit mode): audit mode: not terminated"
            ) in _lines(caplog)
    assert fake_telegram.poll() is None
