"""Ending a process tree, with real processes: children and all, stubborn ones, reused pids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agent.responding.enforce import terminate_tree
from tests.unprivileged import Unprivileged

DEADLINE = 10.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def gone(pid: int, create_time: float) -> bool:
    """Exited: no such process, a zombie awaiting its reaper, or the pid now someone else's."""
    try:
        process = psutil.Process(pid)
        return bool(process.create_time() != create_time
                    or process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def fake_telegram_tree(tmp_path: Path, spawned: list[subprocess.Popen[str]]) -> psutil.Process:
    """A `telegram-desktop` (a copied /bin/sh) with a child and a grandchild."""
    exe = tmp_path / "telegram-desktop"
    shutil.copy("/bin/sh", exe)
    process = subprocess.Popen([str(exe), "-c", "sleep 300 & (sleep 300 & wait) & wait"],
                               text=True)
    spawned.append(process)
    root = psutil.Process(process.pid)
    wait_until(lambda: len(root.children(recursive=True)) == 3, "the tree to start")
    return root


@pytest.mark.skipif(sys.platform == "win32", reason="uses /bin/sh")
def test_the_whole_tree_is_terminated(
    tmp_path: Path, spawned: list[subprocess.Popen[str]],
) -> None:
    root = fake_telegram_tree(tmp_path, spawned)
    tree = [(p.pid, p.create_time()) for p in [root, *root.children(recursive=True)]]
    result = terminate_tree(root.pid, root.create_time(), grace_seconds=5.0)
    assert result.ok, result.detail
    assert "pid" in result.detail and "3 child process(es)" in result.detail
    assert sorted(result.killed_pids) == sorted(pid for pid, _ in tree)
    assert all(gone(pid, created) for pid, created in tree)
    assert spawned[0].wait(timeout=DEADLINE) != 0


def test_a_process_ignoring_sigterm_is_killed_after_the_grace(
    spawned: list[subprocess.Popen[str]],
) -> None:
    code = ("import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(300)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    spawned.append(process)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    created = psutil.Process(process.pid).create_time()
    result = terminate_tree(process.pid, created, grace_seconds=0.5)
    assert result.ok, result.detail
    assert "ignored SIGTERM and got SIGKILL" in result.detail
    assert result.killed_pids == (process.pid,)
    assert process.wait(timeout=DEADLINE) == -9


def test_a_pid_whose_start_time_differs_is_left_alone(
    spawned: list[subprocess.Popen[str]],
) -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], text=True)
    spawned.append(process)
    created = psutil.Process(process.pid).create_time()
    result = terminate_tree(process.pid, created - 60.0)
    assert not result.ok
    assert "belongs to another process" in result.detail
    assert result.killed_pids == ()
    assert process.poll() is None
    assert psutil.Process(process.pid).status() != psutil.STATUS_STOPPED


def test_a_process_already_gone_is_success(spawned: list[subprocess.Popen[str]]) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"], text=True)
    created = psutil.Process(process.pid).create_time()
    process.wait()
    result = terminate_tree(process.pid, created)
    assert result.ok and "already exited" in result.detail


@pytest.mark.parametrize("target", ["self", "init", "parent"])
def test_the_agent_never_ends_itself_init_or_a_tree_it_runs_in(target: str) -> None:
    pid = {"self": os.getpid(), "init": 1, "parent": os.getppid()}[target]
    before = psutil.Process(pid).create_time()
    result = terminate_tree(pid, None)
    assert not result.ok and result.detail.startswith(f"refusing to terminate pid {pid}")
    process = psutil.Process(pid)
    assert process.create_time() == before and process.status() != psutil.STATUS_STOPPED


def test_access_denied_is_reported_clearly(
    spawned: list[subprocess.Popen[str]], unprivileged: Unprivileged
) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], text=True)
    spawned.append(victim)
    created = psutil.Process(victim.pid).create_time()
    code = ("import json, sys\n"
            "from agent.responding.enforce import terminate_tree\n"
            f"r = terminate_tree({victim.pid}, {created!r})\n"
            "print(json.dumps([r.ok, r.detail]))\n")
    enforcer = unprivileged.run(code)
    assert enforcer.returncode == 0, enforcer.stderr
    ok, detail = json.loads(enforcer.stdout)
    assert not ok
    assert detail.startswith(f"access denied signalling pid {victim.pid}")
    assert victim.poll() is None
