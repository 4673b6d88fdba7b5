"""Whole-system harness: a real `warden server run` and a real `warden-agent run`,
each its own process on loopback, so tests can stop, restart and kill -9 them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.agent.conftest import FakeProcesses, wait_for

BIN = Path(sys.executable).parent
# Generous: on a shared, loaded machine `warden server init` + start took over 30 s.
STARTUP = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name.startswith("WARDEN_")}


def _close(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class WardenServer:
    """`warden server init` once, then `warden server run` as a child process."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str] | None = None,
                 *, copy_of: WardenServer | None = None) -> None:
        """Initialised by `warden server init`, or, with `copy_of`, a copy of that server's
        data dir (keys, tokens, database) made before it ever ran: the same server,
        without an init process per test (a real init when the WARDEN_ settings differ)."""
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, "WARDEN_CHECKIN_INTERVAL_SECONDS": "5"}
        # The caller's own database setting must not leak in; a test that wants
        # PostgreSQL passes WARDEN_DATABASE_URL in `env`.
        self.env.pop("WARDEN_DATABASE_URL", None)
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        # More `warden server run` flags (e.g. ["--workers", "3"]).
        self.run_args: list[str] = []
        self.startup_timeout = STARTUP
        if copy_of is not None and _settings(copy_of.env) == _settings(self.env):
            assert copy_of.process is None
            shutil.copytree(copy_of.data_dir, data_dir, symlinks=True)
            self.admin_token: str = copy_of.admin_token
            self.enroll_secret: str = copy_of.enroll_secret
            return
        init = subprocess.run(
            [str(BIN / "warden"), "server", "init", "--data-dir", str(data_dir), "--json"],
            capture_output=True, text=True, env=self.env, timeout=120, check=True)
        secrets = json.loads(init.stdout)
        self.admin_token = secrets["admin_token"]
        self.enroll_secret = secrets["enroll_secret"]

    def start(self) -> None:
        assert self.process is None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "warden"), "server", "run", "--data-dir", str(self.data_dir),
                 "--host", "127.0.0.1", "--port", str(self.port), *self.run_args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_for(self._healthy, self.startup_timeout, f"the server on {self.url} ({self.log})")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the server exited: {self.log.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            # A timeout too: with --workers the port is bound before a worker accepts.
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        self.process.wait(timeout=30)
        _close(self.process)
        self.process = None

    def api(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.url}/api/v1/{path}", timeout=10,
                                    headers={"Authorization": f"Bearer {self.admin_token}"},
                                    **kwargs)
        response.raise_for_status()
        return response.json()

    def push_policy(self, text: str) -> tuple[int, str]:
        """Upload a policy file (YAML) as the admin; its version number and version hash."""
        response = requests.post(f"{self.url}/api/v1/policies", data=text.encode(), timeout=10,
                                 headers={"Authorization": f"Bearer {self.admin_token}",
                                          "Content-Type": "application/yaml"})
        assert response.status_code == 201, response.text
        return response.json()["version_number"], response.json()["version"]

    def findings(self, **filters: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api("findings", params={"limit": 500, **filters})[
            "items"]
        return items


class AgentProcess:
    """`warden-agent run` with its own state dir, and a notifier program that records."""

    def __init__(self, server: WardenServer, state_dir: Path, bin_dir: Path, log: Path,
                 **settings: str) -> None:
        self.state_dir = state_dir
        self.log = log
        self.notifications = bin_dir / "notifications.jsonl"
        bin_dir.mkdir(parents=True, exist_ok=True)
        # The machine has no desktop session to show a notification in; a site
        # notifier program records what the user would have been shown.
        recorder = bin_dir / "record-notice"
        dump = "import json,sys; print(json.dumps(sys.argv[1:]))"
        recorder.write_text(f"#!/bin/sh\n{sys.executable} -c '{dump}' \"$@\" "
                            f">> {self.notifications}\n")
        recorder.chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "WARDEN_AGENT_CONFIG": str(state_dir.parent / "no-config.toml"),
            "WARDEN_AGENT_SERVER_URL": server.url,
            "WARDEN_AGENT_ENROLL_SECRET": server.enroll_secret,
            "WARDEN_AGENT_STATE_DIR": str(state_dir),
            "WARDEN_AGENT_INSTALLED": "false",
            "WARDEN_AGENT_NETWORK": "false",
            "WARDEN_AGENT_UPLOAD_INTERVAL": "0.5",
            "WARDEN_AGENT_NOTIFY_COMMAND": str(recorder),
            **{f"WARDEN_AGENT_{name.upper()}": value for name, value in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None
        # What runs as the agent; a test may run the same daemon with a sensor replaced.
        self.command = [str(BIN / "warden-agent"), "run"]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log,
                                            stderr=subprocess.STDOUT, env=self.env)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        _close(self.process)
        self.process = None
        return code

    def check_in_now(self) -> None:
        """SIGUSR1: the agent checks in at once instead of at its next scheduled time."""
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)

    def status(self) -> dict[str, Any]:
        result = subprocess.run([str(BIN / "warden-agent"), "status", "--json"],
                                capture_output=True, text=True, env=self.env, timeout=60,
                                check=True)
        status: dict[str, Any] = json.loads(result.stdout)
        return status

    def notices(self) -> list[list[str]]:
        if not self.notifications.exists():
            return []
        return [json.loads(line) for line in self.notifications.read_text().splitlines()]


@pytest.fixture(scope="session")
def initialized_server(tmp_path_factory: pytest.TempPathFactory) -> WardenServer:
    """One `warden server init` per test process, never started: what `server` copies."""
    folder = tmp_path_factory.mktemp("initialized")
    return WardenServer(folder / "server", folder / "unused.log")


@pytest.fixture
def server(tmp_path: Path, initialized_server: WardenServer) -> Iterator[WardenServer]:
    warden = WardenServer(tmp_path / "server", tmp_path / "server.log",
                          copy_of=initialized_server)
    warden.start()
    try:
        yield warden
    finally:
        warden.stop()


@contextlib.contextmanager
def agent_factory(tmp_path: Path, server: WardenServer) -> Iterator[Any]:
    """`make(**settings)` starts nothing but builds an AgentProcess; all are killed after."""
    agents: list[AgentProcess] = []

    def make(**settings: str) -> AgentProcess:
        name = f"agent{len(agents)}"
        agent = AgentProcess(server, tmp_path / name, tmp_path / "bin",
                             tmp_path / f"{name}.log", **settings)
        agents.append(agent)
        return agent

    try:
        yield make
    finally:
        for agent in agents:
            if agent.process is not None:
                agent.stop(signal.SIGKILL)


@pytest.fixture
def make_agent(tmp_path: Path, server: WardenServer) -> Iterator[Any]:
    with agent_factory(tmp_path, server) as make:
        yield make


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeProcesses]:
    directory = tmp_path / "fakes"
    directory.mkdir()
    processes = FakeProcesses(directory)
    try:
        yield processes
    finally:
        processes.close()
