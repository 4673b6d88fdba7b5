"""Run inside a private mount namespace (unshare -m): the blocker guards only its copies.

`python block_harness.py DIR POLICY_FILE SCENARIO` mounts a tmpfs on DIR, starts
the real blocker over every mount of this namespace, tries execs and prints one
JSON object: what each exec did. Nothing outside the namespace is marked, so a
bug here cannot stop the test machine from starting programs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agent.prevention.blocker import Blocked, Blocker
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import load_catalog, parse_policy

TIMEOUT = 20.0


def run(argv: list[str]) -> str:
    """'ok', 'EPERM' or the error, for one exec (with a deadline: a hang is a failure)."""
    try:
        subprocess.run(argv, check=True, timeout=TIMEOUT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    except PermissionError:
        return "EPERM"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def engine(policy_file: str) -> Engine:
    catalog = load_catalog()
    policy = parse_policy(Path(policy_file).read_text(), policy_file, catalog)
    return Engine(compile_bundle(policy, catalog), HostContext(os="linux"))


def mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], check=True)


def wait_until(check: Any, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a condition
    return True


class Agent:
    """The blocker in a process of its own (`serve`), as the agent runs it: the execs tried
    here come from another process tree, so the agent's own-tree exemption does not apply."""

    def __init__(self, policy_file: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "-", policy_file, "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self.line()

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.line())


def blocking(root: Path, policy_file: str) -> dict[str, Any]:
    mount_tmpfs(root)
    shutil.copy("/bin/sleep", root / "Telegram")
    shutil.copy("/bin/true", root / "true")
    shutil.copy(os.environ["HASHED_BINARY"], root / "renamed-copy")
    agent = Agent(policy_file)
    result: dict[str, Any] = {"marked_tmpfs": str(root) in agent.ask("marked")}
    result["telegram"] = run([str(root / "Telegram"), "0"])
    result["true"] = run([str(root / "true")])
    result["system_true"] = run(["/bin/true"])
    result["hashed"] = run([str(root / "renamed-copy")])
    result["cmdline_only"] = run([str(root / "true"), "--cmdonly-marker"])
    # A mount that appears after the start is marked too.
    later = root.parent / "later"
    mount_tmpfs(later)
    result["later_marked"] = wait_until(lambda: str(later) in agent.ask("marked"))
    shutil.copy("/bin/sleep", later / "Telegram")
    result["later_telegram"] = run([str(later / "Telegram"), "0"])
    # Same file again: answered from the cache.
    hits = agent.ask("stats")["cache_hits"]
    result["telegram_again"] = run([str(root / "Telegram"), "0"])
    result["cache_hit"] = agent.ask("stats")["cache_hits"] > hits
    result["blocked"] = agent.ask("blocked")
    result["stats"] = agent.ask("stats")
    agent.ask("stop")
    agent.process.wait()
    result["after_stop"] = run([str(root / "Telegram"), "0"])
    return result


def killed(root: Path, policy_file: str) -> dict[str, Any]:
    """kill -9 of a blocking agent: the machine starts programs again at once."""
    mount_tmpfs(root)
    shutil.copy("/bin/sleep", root / "Telegram")
    shutil.copy("/bin/true", root / "true")
    agent = Agent(policy_file)
    result: dict[str, Any] = {"ready": agent.ready, "before": run([str(root / "Telegram"), "0"])}
    os.kill(agent.process.pid, signal.SIGKILL)
    agent.process.wait()
    result["true_after_kill"] = run([str(root / "true")])
    result["system_true_after_kill"] = run(["/bin/true"])
    result["telegram_after_kill"] = run([str(root / "Telegram"), "0"])
    return result


def serve(policy_file: str) -> None:
    blocked: list[Blocked] = []
    blocker = Blocker(engine(policy_file), blocked.append)
    blocker.start()
    print("ready", flush=True)
    for command in sys.stdin:
        command = command.strip()
        if command == "marked":
            answer: Any = sorted(blocker.marked)
        elif command == "stats":
            answer = blocker.stats.as_dict()
        elif command == "blocked":
            answer = [{"app": b.finding.app, "path": b.path, "sha256": b.sha256,
                       "user": b.user, "parent": b.parent, "enforced": b.enforced,
                       "matched": b.finding.matched} for b in list(blocked)]
        else:
            blocker.stop()
            answer = "stopped"
        print(json.dumps(answer), flush=True)
        if answer == "stopped":
            return


class _Stuck(Engine):
    """An engine whose exec decision never returns: only the deadman can help."""

    def exec_block(self, observation: Any) -> Any:
        threading.Event().wait()


def stalled(root: Path, policy_file: str) -> dict[str, Any]:
    mount_tmpfs(root)
    shutil.copy("/bin/true", root / "true")
    stuck = _Stuck(engine(policy_file).bundle, HostContext(os="linux"))
    blocker = Blocker(stuck, lambda blocked: None, stall_seconds=1.0)
    blocker.start()
    result = {"true": run([str(root / "true")]), "system_true": run(["/bin/true"]),
              "closed_by_deadman": blocker.closed_by_deadman,
              "last_error": blocker.stats.last_error}
    return result


def main() -> None:
    root, policy_file, scenario = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if scenario == "serve":
        serve(policy_file)
        return
    scenarios = {"blocking": blocking, "killed": killed, "stalled": stalled}
    print(json.dumps(scenarios[scenario](root, policy_file)), flush=True)


if __name__ == "__main__":
    main()
