"""`warden-agent` refuses, with exit code 2 and the file named, a config or state dir that is
not an administrator's; an ordinary user's own config is fine for their own `scan`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unprivileged import Unprivileged

NOBODY = 65534
OTHER_USER = 65533
QUIET_SCAN = ["scan", "--once", "--json", "--no-processes", "--no-installed", "--no-network"]

needs_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="handing a file to another user needs root")


def planted_config(folder: Path, owner: int) -> Path:
    path = folder / "agent.toml"
    path.write_text('server_url = "https://warden.example.org"\n'
                    'notify_command = "/tmp/their-program"\n')
    path.chmod(0o600)
    os.chown(path, owner, owner)
    return path


@needs_root
@pytest.mark.parametrize("command", [["run"], ["status"], ["status", "--json"], QUIET_SCAN])
def test_a_planted_config_stops_every_command_with_exit_2(
        agent: Callable[..., Any], agent_environ: Callable[..., dict[str, str]],
        tmp_path: Path, command: list[str]) -> None:
    path = planted_config(tmp_path, NOBODY)
    result = agent(*command, env=agent_environ(WARDEN_AGENT_CONFIG=str(path),
                                               WARDEN_AGENT_STATE_DIR=str(tmp_path / "state")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"warden-agent: refusing the agent config file {path}: it is owned by nobody" \
        in result.stderr
    assert f"Fix: chown root:root {path} && chmod 600 {path}" in result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was done


@pytest.mark.parametrize("command", [["run"], ["status"]])
def test_a_state_dir_others_may_write_stops_run_and_status_with_exit_2(
        agent: Callable[..., Any], agent_environ: Callable[..., dict[str, str]],
        tmp_path: Path, command: list[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    env = agent_environ(WARDEN_AGENT_STATE_DIR=str(state),
                        WARDEN_AGENT_SERVER_URL="http://127.0.0.1:9")
    result = agent(*command, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"refusing the agent state directory {state}: it has mode 0777" in result.stderr
    assert f"Fix: chown root:root {state} && chmod 700 {state}" in result.stderr
    assert list(state.iterdir()) == []  # nothing read or written in it


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder under /tmp that `nobody` can reach (pytest's own is root's, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="warden-ownership-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def main_as(unprivileged: Unprivileged, argv: list[str]) -> tuple[int, str, str]:
    """`warden-agent ARGV` run as `nobody` from the staged copy: (code, stdout, stderr)."""
    done = unprivileged.run("import sys\nfrom agent.cli import main\nsys.exit(main(sys.argv[1:]))",
                            *argv)
    return done.returncode, done.stdout, done.stderr


@needs_root
def test_an_ordinary_users_scan_trusts_their_own_config_not_another_users(
        reachable: Path, monkeypatch: pytest.MonkeyPatch, unprivileged: Unprivileged) -> None:
    path = planted_config(reachable, NOBODY)
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(path))
    code, output, errors = main_as(unprivileged, QUIET_SCAN)
    assert code == 0, errors
    assert json.loads(output)["findings"] == []
    os.chown(path, OTHER_USER, OTHER_USER)
    code, output, errors = main_as(unprivileged, QUIET_SCAN)
    assert code == 2, output
    assert f"refusing the agent config file {path}: it is owned by uid 65533" in errors


# -- the Windows install's pre-flight (`warden-agent-service.py --check`) -------


@needs_root
def test_the_install_pre_flight_refuses_a_folder_someone_else_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A user made the agent's folder before the install and put their agent.toml there:
    install-warden-agent.ps1 stops at its pre-flight instead of taking the folder over."""
    from agent.service import windows as winservice

    folder = tmp_path / "Warden"  # what %ProgramData%\Warden is on Windows
    folder.mkdir(mode=0o700)
    monkeypatch.setattr("agent.settings.default_config_dir", lambda: folder)
    monkeypatch.delenv("WARDEN_AGENT_CONFIG", raising=False)
    monkeypatch.setenv("WARDEN_AGENT_SERVER_URL", "https://warden.example.org")
    monkeypatch.setenv("WARDEN_AGENT_STATE_DIR", str(folder / "state"))
    assert winservice.main(["--check"]) == 0, capsys.readouterr().out
    (folder / "logs").mkdir()
    planted = folder / "logs" / "agent.log"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    assert winservice.main(["--check"]) == 2
    assert f"refusing the agent's folder's file {planted}: it is owned by nobody" in \
        capsys.readouterr().out
    planted.unlink()
    config = planted_config(folder, NOBODY)
    assert winservice.main(["--check"]) == 2
    assert f"refusing the agent config file {config}: it is owned by nobody" in \
        capsys.readouterr().out
