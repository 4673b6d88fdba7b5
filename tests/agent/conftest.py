"""Shared parts for agent tests: real fake processes, engines from policy text, deadlines."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy, parse_policy

T = TypeVar("T")

SLEEP = shutil.which("sleep") or "/bin/sleep"
AGENT = str(Path(sys.executable).with_name("warden-agent"))
DEADLINE = 10.0


def wait_for(check: Callable[[], T | None], timeout: float = DEADLINE, what: str = "") -> T:
    """Poll `check` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(0.02)  # polling interval of a condition, not a synchronisation sleep


def engine_from_text(text: str, os_name: str = "linux") -> Engine:
    catalog = load_catalog()
    policy = parse_policy(text, "test-policy.yaml", catalog)
    return Engine(compile_bundle(policy, catalog), HostContext(os=os_name))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def default_engine() -> Engine:
    catalog = load_catalog()
    policy = load_policy(default_policy_path(), catalog)
    return Engine(compile_bundle(policy, catalog), HostContext(os="linux"))


class FakeProcesses:
    """Copies of a harmless binary, run under the names we want the agent to see."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[subprocess.Popen[bytes]] = []

    def binary(self, name: str, source: str = SLEEP, extra: bytes = b"") -> Path:
        folder = self.directory / f"bin{len(list(self.directory.iterdir()))}"
        folder.mkdir()
        path = folder / name
        shutil.copyfile(source, path)
        if extra:
            # Trailing bytes after an ELF image are ignored by the loader: same
            # program, different SHA-256.
            with path.open("ab") as handle:
                handle.write(extra)
        path.chmod(0o755)
        return path

    def start(self, name: str, *args: str, extra: bytes = b"", **popen: Any
              ) -> subprocess.Popen[bytes]:
        path = self.binary(name, extra=extra)
        process = subprocess.Popen([str(path), *(args or ("300",))], **popen)
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        process.kill()
        process.wait()

    def close(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[FakeProcesses]:
    directory = tmp_path / "fakes"
    directory.mkdir()
    processes = FakeProcesses(directory)
    try:
        yield processes
    finally:
        processes.close()


class Lines:
    """Lines of a pipe, read on a thread so a test can wait for one with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        # The pump owns the stream: it closes it at end of file, so nobody closes
        # it under a read in progress.
        with stream:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_matching(self, check: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no matching line within {timeout} s; saw {self.seen[-20:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"stream ended; saw {self.seen[-20:]}")
            self.seen.append(line)
            if check(line):
                return line


def agent_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for a `warden-agent` subprocess, blind to any real config file."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("WARDEN_AGENT_")}
    env["WARDEN_AGENT_CONFIG"] = str(tmp_path / "no-such-agent.toml")
    env.update(extra)
    return env


def run_agent(tmp_path: Path, *args: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=60,
                          env=popen.pop("env", agent_env(tmp_path)), **popen)


# Helpers reach the tests as fixtures: test directories are not packages, so a
# test cannot import this module by name.


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    # pytest's tmp_path lives in a folder only its owner may enter; an
    # unprivileged reader needs a way in.
    path = Path(tempfile.mkdtemp(prefix="warden-installed-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder in path.rglob("*"):
            if folder.is_dir() and not folder.is_symlink():
                folder.chmod(0o755)
        shutil.rmtree(path)


@pytest.fixture
def wait() -> Callable[..., Any]:
    return wait_for


@pytest.fixture
def make_engine() -> Callable[..., Engine]:
    return engine_from_text


@pytest.fixture
def lines() -> type[Lines]:
    return Lines


@pytest.fixture
def agent(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, **popen: Any) -> subprocess.CompletedProcess[str]:
        return run_agent(tmp_path, *args, **popen)

    return run


@pytest.fixture
def agent_environ(tmp_path: Path) -> Callable[..., dict[str, str]]:
    def build(**extra: str) -> dict[str, str]:
        return agent_env(tmp_path, **extra)

    return build


@pytest.fixture
def agent_command() -> list[str]:
    """The installed `warden-agent` console script."""
    return [AGENT]
