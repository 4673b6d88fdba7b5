"""Ending a banned app's process tree, safely.

A finding can be seconds old by the time it is enforced, and the kernel reuses
pids, so the process is first checked to still be the one that was seen (same
pid, same start time). The agent never signals itself or pid 1, nor a tree it
runs inside.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import psutil

# The same process can report a start time that differs by float rounding (or a
# wall-clock step moving the boot time); a reused pid belongs to a process started
# after the old one exited. Too strict a check only refuses, which is safe.
_CREATE_TIME_TOLERANCE = 0.1
# After SIGKILL a process can linger briefly (exiting, or in uninterruptible I/O).
_KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class TerminateResult:
    ok: bool
    detail: str
    killed_pids: tuple[int, ...] = ()


def terminate_tree(
    pid: int, create_time: float | None, grace_seconds: float = 3.0
) -> TerminateResult:
    """End `pid` and its descendants: children first, SIGTERM, then SIGKILL after the grace.

    `create_time` is the start time the finding recorded; when it no longer
    matches, the pid now belongs to another process and nothing is touched.
    Pass None only when the start time is genuinely unknown.
    """
    if pid in (0, 1) or pid == os.getpid():
        return TerminateResult(False, f"refusing to terminate pid {pid}: it is the agent "
                                      "itself or the init process")
    if pid in _agent_ancestors():
        return TerminateResult(False, f"refusing to terminate pid {pid}: the agent runs "
                                      "inside its process tree")
    try:
        root = psutil.Process(pid)
        if create_time is not None and abs(root.create_time() - create_time) > \
                _CREATE_TIME_TOLERANCE:
            return TerminateResult(False, f"pid {pid} now belongs to another process "
                                          "(start time differs): not terminated")
        if root.status() == psutil.STATUS_ZOMBIE:
            return TerminateResult(True, f"pid {pid} had already exited")
        name = root.name()
        # Freeze the root first so it cannot start new children while they are collected.
        root.suspend()
    except psutil.NoSuchProcess:
        return TerminateResult(True, f"pid {pid} had already exited")
    except psutil.AccessDenied:
        return TerminateResult(False, _denied(pid))
    try:
        children = root.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # Gone meanwhile, or its children are hidden: the root is still ended below.
        children = []

    denied: list[int] = []
    try:
        # Children first, so a parent cannot restart a child it sees die.
        for process in [*reversed(children), root]:
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                denied.append(process.pid)
    finally:
        # A stopped process only acts on SIGTERM once continued; and never leave it stopped.
        _resume(root)

    tree = [*children, root]
    stubborn = _wait_exited(tree, grace_seconds)
    for process in stubborn:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied:
            denied.append(process.pid)
    alive = _wait_exited(stubborn, _KILL_WAIT_SECONDS)

    killed = tuple(process.pid for process in tree if process not in alive)
    if not alive:
        how = f"; {len(stubborn)} ignored SIGTERM and got SIGKILL" if stubborn else ""
        return TerminateResult(True, f"terminated {name} (pid {pid}) and "
                                     f"{len(children)} child process(es){how}", killed)
    survivors = sorted(process.pid for process in alive)
    if set(survivors) <= set(denied):
        return TerminateResult(False, _denied(survivors[0]), killed)
    return TerminateResult(False, f"pid(s) {survivors} still running after SIGKILL", killed)


def _agent_ancestors() -> set[int]:
    try:
        return {parent.pid for parent in psutil.Process().parents()}
    except psutil.Error:
        return set()


def _denied(pid: int) -> str:
    return (f"access denied signalling pid {pid}: the agent needs to run as root "
            "(CAP_KILL) or Administrator to end other users' processes")


def _resume(process: psutil.Process) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        process.resume()


def _exited(process: psutil.Process) -> bool:
    try:
        # A zombie has exited; it only waits for its parent (or init) to reap it.
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_exited(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running when all others exited or `timeout` passed."""
    deadline = time.monotonic() + timeout
    alive = [process for process in processes if not _exited(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        alive = [process for process in alive if not _exited(process)]
    return alive
