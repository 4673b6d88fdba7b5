"""Exec-time blocking for real: fanotify inside a private mount namespace with its own tmpfs.

Every scenario runs in `unshare -m` (tests/agent/block_harness.py): the blocker
marks only that namespace's mounts, so a bug cannot stop this machine from
starting programs. The tests skip, saying why, only where the kernel refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.prevention import fanotify

HARNESS = Path(__file__).with_name("block_harness.py")
ROOT = Path(__file__).parents[2]


def _refusal() -> str | None:
    if not sys.platform.startswith("linux"):
        return "fanotify is Linux only"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare(1) for a private mount namespace"
    try:
        os.close(fanotify.init_group())
    except fanotify.FanotifyUnavailable as exc:
        return str(exc)
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"the kernel refuses a private mount namespace: {probe.stderr.strip()}"
    return None


REFUSAL = _refusal()
pytestmark = pytest.mark.skipif(REFUSAL is not None, reason=REFUSAL or "")


def _policy(tmp_path: Path, mode: str = "enforce") -> tuple[Path, Path]:
    # A copy of /bin/true with a tail: same program, its own SHA-256, an innocent name.
    hashed = tmp_path / "hashed-true"
    hashed.write_bytes(Path("/bin/true").read_bytes() + b"warden-block-test")
    hashed.chmod(0o755)
    digest = hashlib.sha256(hashed.read_bytes()).hexdigest()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
name: block-test
mode: {mode}
apps:
  - id: hashed
    name: Hashed
    signatures:
      process:
        sha256: [{digest}]
  - id: cmdonly
    name: CmdOnly
    signatures:
      process:
        cmdline: ['--cmdonly-marker']
rules:
  - app: telegram
    verdict: deny
    action: block
    alternative: signal
  - app: signal
    verdict: allow
  - app: hashed
    verdict: deny
    action: block
  - app: cmdonly
    verdict: deny
    action: block
""")
    return policy, hashed


def _harness(tmp_path: Path, scenario: str, mode: str = "enforce") -> dict[str, Any]:
    policy, hashed = _policy(tmp_path, mode)
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, str(HARNESS),
         str(tmp_path / "mnt"), str(policy), scenario],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HASHED_BINARY": str(hashed)})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_denied_files_fail_to_exec_with_eperm_and_the_rest_runs(tmp_path: Path) -> None:
    result = _harness(tmp_path, "blocking")
    assert result["marked_tmpfs"]
    assert result["telegram"] == "EPERM"  # by name
    assert result["hashed"] == "EPERM"  # by SHA-256, read through the event's fd
    assert result["true"] == "ok"
    assert result["system_true"] == "ok"
    # The command line is not known at exec: a cmdline-only rule never blocks.
    assert result["cmdline_only"] == "ok"
    assert result["later_marked"] and result["later_telegram"] == "EPERM"
    assert result["telegram_again"] == "EPERM" and result["cache_hit"]
    assert result["after_stop"] == "ok"
    apps = [b["app"] for b in result["blocked"]]
    assert apps.count("telegram") == 3 and apps.count("hashed") == 1
    first = result["blocked"][0]
    assert first["path"] == str(tmp_path / "mnt" / "Telegram")
    assert first["user"] == "root"
    assert first["parent"] == os.path.realpath(sys.executable)  # who asked: the harness
    assert first["enforced"] is True
    hashed = next(b for b in result["blocked"] if b["app"] == "hashed")
    assert hashed["sha256"] == hashlib.sha256(
        (tmp_path / "hashed-true").read_bytes()).hexdigest()
    assert result["stats"]["denied"] == 4 and result["stats"]["fail_open"] == 0


def test_audit_mode_only_reports_what_it_would_block(tmp_path: Path) -> None:
    result = _harness(tmp_path, "blocking", mode="audit")
    assert result["telegram"] == "ok" and result["hashed"] == "ok"
    assert {b["app"] for b in result["blocked"]} == {"telegram", "hashed"}
    assert not any(b["enforced"] for b in result["blocked"])
    assert result["stats"]["denied"] == 0


def test_kill_9_of_the_blocking_agent_leaves_programs_starting(tmp_path: Path) -> None:
    result = _harness(tmp_path, "killed")
    assert result["ready"] == "ready"
    assert result["before"] == "EPERM"  # it was blocking
    assert result["true_after_kill"] == "ok"
    assert result["system_true_after_kill"] == "ok"
    assert result["telegram_after_kill"] == "ok"  # the marks died with the agent


def test_a_stalled_decision_is_cut_off_by_the_deadman(tmp_path: Path) -> None:
    result = _harness(tmp_path, "stalled")
    assert result["true"] == "ok" and result["system_true"] == "ok"
    assert result["closed_by_deadman"] is True
    assert "blocking switched off" in result["last_error"]
