"""`warden-agent status` from a shell finds the service's settings on its own (the systemd
unit's environment file) and names the policy by its number once the server gave it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.service.render import render_env_file


@pytest.fixture
def shell_without_the_service_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("WARDEN_AGENT_SERVER_URL", "WARDEN_AGENT_STATE_DIR",
                 "WARDEN_AGENT_ENROLL_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(tmp_path / "none.toml"))
    env_file = tmp_path / "agent.env"
    monkeypatch.setenv("WARDEN_AGENT_ENV_FILE", str(env_file))
    return env_file


def test_status_reads_the_service_environment_file(
    shell_without_the_service_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    # Written the way `warden-agent install-service` writes it, quoting and all.
    shell_without_the_service_env.write_text(render_env_file({
        "WARDEN_AGENT_SERVER_URL": "https://warden.example:8700",
        "WARDEN_AGENT_ENROLL_SECRET": 'we$ird"secret`',
        "WARDEN_AGENT_STATE_DIR": str(state), "PATH": "/usr/bin"}))
    shell_without_the_service_env.chmod(0o600)
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["server_url"] == "https://warden.example:8700"
    assert report["state_dir"] == str(state)
    assert main(["status"]) == 0
    assert "(not configured)" not in capsys.readouterr().out


def test_the_shells_own_environment_still_wins(
    shell_without_the_service_env: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shell_without_the_service_env.write_text(
        'WARDEN_AGENT_SERVER_URL="https://from-the-file"\n')
    monkeypatch.setenv("WARDEN_AGENT_SERVER_URL", "https://from-the-shell")
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["server_url"] == "https://from-the-shell"


def test_status_names_the_policy_number_of_the_bundle_it_runs(
    shell_without_the_service_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shell_without_the_service_env.write_text(f'WARDEN_AGENT_STATE_DIR="{state}"\n')
    bundle = {"version": "ab" * 32, "policy": {"mode": "enforce"}}
    (state / "policy.json").write_text(json.dumps({"bundle": bundle}))
    (state / "status.json").write_text(json.dumps({"policy_number": 2,
                                                   "policy_number_of": "ab" * 32}))
    assert main(["status"]) == 0
    assert "policy          v2 abababababab (enforce)" in capsys.readouterr().out
    # The number of another version (the agent has not fetched it yet) is not shown.
    (state / "status.json").write_text(json.dumps({"policy_number": 3,
                                                   "policy_number_of": "cd" * 32}))
    assert main(["status"]) == 0
    assert "policy          abababababab (enforce)" in capsys.readouterr().out


def test_a_user_who_cannot_read_the_root_only_file_still_runs(
    shell_without_the_service_env: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import agent.settings

    shell_without_the_service_env.write_text('WARDEN_AGENT_SERVER_URL="https://x"\n')

    real = agent.settings.read_trusted

    def refused(path: Path, what: str) -> bytes | None:
        if path == shell_without_the_service_env:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, what)

    # Not root: the 0600 file cannot be opened, and that is not an error.
    monkeypatch.setattr(agent.settings, "read_trusted", refused)
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["server_url"] is None
