"""`warden policy export` of the server's active policy, or of a stored version, over real HTTP.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WARDEN = Path(sys.executable).with_name("warden")
DIGEST = "cd" * 32
HASHED = f"""
name: hashed
rules:
  - app: corpchat
    verdict: deny
    action: block
apps:
  - id: corpchat
    name: CorpChat
    signatures:
      process:
        sha256: [{DIGEST}]
"""


def _run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WARDEN), *argv], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_export_the_active_policy_and_a_stored_version(
    live_server: str, admin_token: str, tmp_path: Path
) -> None:
    if not WARDEN.exists():
        pytest.skip(f"the warden console script is not installed beside {sys.executable}")
    env = {name: value for name, value in os.environ.items() if not name.startswith("WARDEN_")}
    env.update(WARDEN_URL=live_server, WARDEN_TOKEN=admin_token,
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    # Version 1, the default policy, is active: it denies Telegram.
    active = _run(env, "policy", "export", "--format", "santa")
    assert active.returncode == 0, active.stderr
    teams = {rule["identifier"] for rule in json.loads(active.stdout)["rules"]}
    assert "6N38VWS5BX" in teams

    policy = tmp_path / "hashed.yaml"
    policy.write_text(HASHED)
    pushed = _run(env, "policy", "push", str(policy))
    assert pushed.returncode == 0, pushed.stderr
    stored = _run(env, "policy", "export", "--version", "2", "--format", "fapolicyd")
    assert stored.returncode == 0, stored.stderr
    assert f"deny_audit perm=execute all : sha256hash={DIGEST}" in stored.stdout
    assert "telegram" not in stored.stdout.lower()

    missing = _run(env, "policy", "export", "--version", "99", "--format", "fapolicyd")
    assert missing.returncode != 0 and "99" in missing.stderr
    both = _run(env, "policy", "export", str(policy), "--version", "2", "--format", "santa")
    assert both.returncode == 2 and "not both" in both.stderr
