"""`warden server init` and `warden server run` as real subprocesses."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from server import db
from server.models import ApiToken, AuditEntry, EnrollSecret, PolicyVersion, ServerState
from server.store import enroll_secrets, tokens


def warden_command() -> list[str]:
    script = Path(sys.executable).with_name("warden")
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


@pytest.fixture
def cli_env(db_url: str) -> dict[str, str]:
    """The environment for `warden`: no stray WARDEN_* settings; PostgreSQL via the variable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("WARDEN_")}
    if not db_url.startswith("sqlite"):
        env["WARDEN_DATABASE_URL"] = db_url
    return env


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "server-data"


def warden(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*warden_command(), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def database_url(data_dir: Path, env: dict[str, str]) -> str:
    return env.get("WARDEN_DATABASE_URL") or f"sqlite:///{data_dir / 'warden.db'}"


def table_counts(url: str) -> dict[str, int]:
    engine = db.create_engine(url)
    try:
        with engine.connect() as connection:
            return {model.__tablename__: connection.scalar(
                sa.select(sa.func.count()).select_from(model)) or 0
                for model in (ApiToken, EnrollSecret, PolicyVersion, AuditEntry)}
    finally:
        engine.dispose()


def test_init_prints_secrets_once_and_is_idempotent(
    cli_env: dict[str, str], data_dir: Path
) -> None:
    first = warden(cli_env, "server", "init", "--data-dir", data_dir, "--json")
    assert first.returncode == 0, first.stderr
    result: dict[str, Any] = json.loads(first.stdout)
    assert result["initialized"] is True
    assert result["admin_token"].startswith("wat_")
    assert result["enroll_secret"].startswith("wen_")
    assert result["policy_version"] == 1
    assert result["data_dir"] == str(data_dir)

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "policy-signing.key").stat().st_mode) == 0o600
    if "WARDEN_DATABASE_URL" not in cli_env:
        assert stat.S_IMODE((data_dir / "warden.db").stat().st_mode) == 0o600

    url = database_url(data_dir, cli_env)
    counts = table_counts(url)
    assert counts["api_tokens"] == counts["enroll_secrets"] == counts["policy_versions"] == 1
    engine = db.create_engine(url)
    try:
        with db.session_factory(engine)() as session:
            token = tokens.authenticate(session, result["admin_token"])
            assert token is not None and token.role == "admin"
            assert enroll_secrets.find_usable(session, result["enroll_secret"]) is not None
            state = session.get(ServerState, 1)
            assert state is not None and state.active_policy_number == 1
    finally:
        engine.dispose()

    second = warden(cli_env, "server", "init", "--data-dir", data_dir, "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["initialized"] is False
    assert again["policy_version"] == 1
    assert "admin_token" not in again and "enroll_secret" not in again
    for secret in (result["admin_token"], result["enroll_secret"]):
        assert secret not in second.stdout + second.stderr
    assert table_counts(url) == counts

    plain = warden(cli_env, "server", "init", "--data-dir", data_dir)
    assert plain.returncode == 0
    assert "already initialised" in plain.stdout
    assert "wat_" not in plain.stdout and "wen_" not in plain.stdout


def test_init_tightens_an_existing_data_dir(cli_env: dict[str, str], data_dir: Path) -> None:
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    assert warden(cli_env, "server", "init", "--data-dir", data_dir).returncode == 0
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_init_refuses_to_replace_a_lost_signing_key(
    cli_env: dict[str, str], data_dir: Path
) -> None:
    assert warden(cli_env, "server", "init", "--data-dir", data_dir).returncode == 0
    (data_dir / "policy-signing.key").unlink()
    again = warden(cli_env, "server", "init", "--data-dir", data_dir)
    assert again.returncode == 1
    assert "restore it from a backup" in again.stderr
    assert not (data_dir / "policy-signing.key").exists()


def test_run_refuses_plain_http_beyond_loopback(
    cli_env: dict[str, str], data_dir: Path
) -> None:
    refused = warden(cli_env, "server", "run", "--data-dir", data_dir, "--host", "0.0.0.0")
    assert refused.returncode == 2
    assert "--tls-cert" in refused.stderr and "WARDEN_ALLOW_INSECURE" in refused.stderr
    half_tls = warden(cli_env, "server", "run", "--data-dir", data_dir, "--tls-cert", "c.pem")
    assert half_tls.returncode == 2
    assert "tls_key" in half_tls.stderr


def test_run_needs_an_initialised_data_dir(cli_env: dict[str, str], data_dir: Path) -> None:
    result = warden(cli_env, "server", "run", "--data-dir", data_dir)
    assert result.returncode == 1
    assert "warden server init" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_run_serves_the_api_until_terminated(
    cli_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    init = warden(cli_env, "server", "init", "--data-dir", data_dir, "--json")
    secret = json.loads(init.stdout)["enroll_secret"]
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*warden_command(), "server", "run", "--data-dir", str(data_dir),
             "--port", str(port), "--log-level", "warning"],
            env=cli_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.05)
        enrolled = httpx.post(f"{base}/api/v1/agent/enroll", timeout=10,
                              headers={"Authorization": f"Bearer {secret}"},
                              json={"hostname": "h", "machine_id": "m", "os": "linux",
                                    "os_version": "12", "arch": "x86_64",
                                    "agent_version": "0.1.0", "user": "u"})
        assert enrolled.status_code == 201, enrolled.text
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
    assert code in (0, -signal.SIGTERM), log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_the_warden_script_is_installed() -> None:
    # Guard for the tests above: they must run the real entry point when it exists.
    assert shutil.which("warden") or Path(sys.executable).with_name("warden").exists()


def test_a_server_command_without_the_server_packages_says_which_extra_to_install(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`warden` is installed with any extra; on a machine without the server's packages
    its server commands say what to install instead of a traceback."""
    from server.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` finds missing
    assert main(["server", "run", "--data-dir", str(data_dir)]) == 2
    error = capsys.readouterr().err
    assert "uvicorn is missing" in error and "pip install 'warden[server]'" in error


def _server_commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """`warden server`'s commands, each with its options and arguments."""
    def subcommands(of: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        found = next(action for action in of._actions
                     if isinstance(action, argparse._SubParsersAction))
        return dict(found.choices)

    return {name: sorted(option for action in command._actions
                         for option in [*action.option_strings, action.dest])
            for name, command in subcommands(subcommands(parser)["server"]).items()}


def test_the_server_area_alone_is_the_server_area_of_the_whole_command_line() -> None:
    # `warden server ...` builds only its own area (the others import the API client and the
    # policy language): the same commands with the same options either way.
    from server.cli import build_parser

    alone, whole = _server_commands(build_parser("server")), _server_commands(build_parser())
    assert alone == whole
    assert {"init", "run", "prune", "public-key", "rotate-key"} <= set(alone)


def test_a_refused_server_start_imports_neither_the_web_app_nor_the_api_client(
    tmp_path: Path,
) -> None:
    probe = ("import sys\nfrom server.cli import main\n"
             f"code = main(['server', 'run', '--data-dir', {str(tmp_path)!r}, "
             "'--host', '0.0.0.0'])\n"
             "print(code, sorted(name for name in ('server.app', 'server.api_client', "
             "'sqlalchemy') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={name: value for name, value in os.environ.items()
                                 if not name.startswith("WARDEN_")}, check=False, timeout=60)
    assert result.stdout.split("\n")[0] == "2 []", result.stdout + result.stderr
    assert "--tls-cert" in result.stderr
