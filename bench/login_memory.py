"""Server memory under a burst of wrong dashboard logins, for one or more source trees.

Each argon2 verification takes 64 MiB. Before the login limits counted an
attempt ahead of its hash, every one of N simultaneous wrong passwords was
hashed at once; now at most five per account are hashed (the rest answer 429
unhashed), and at most a few verifications run at a time
(server.dashboard.verify_slots.VerifySlots).

For every tree given (default: this checkout) and each burst, a fresh server
is initialised in a temporary directory and run as a real `warden server run`
process on loopback (PYTHONPATH set to the tree). 50 browsers fetch the login
form, then all post a wrong password at the same moment:

- one account: 50 wrong passwords for one existing user;
- many accounts: one wrong password each for 50 usernames.

Printed per run: the server's RSS before the burst, its highest RSS sampled
every 5 ms during it (and the kernel's VmHWM), the burst's duration and the
answers by status. Compare trees: `bench/login_memory.py --tree /work/main --tree .`
Run: .venv/bin/python bench/login_memory.py [--tree DIR ...] [--logins 50]
"""

from __future__ import annotations

import argparse
import html
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from server.bootstrap import initialize
from server.settings import ServerSettings
from server.store import users

START_TIMEOUT_S = 60
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def prepare(data_dir: Path) -> None:
    """Initialise a server there (this tree's migrations) with one user, `alice`."""
    settings = ServerSettings(data_dir=data_dir)
    initialize(settings)
    from server import db

    engine = db.create_engine(settings.resolved_database_url)
    try:
        with db.session_factory(engine)() as session:
            users.create(session, username="alice", password=PASSWORD, role="viewer",
                         actor="bench")
            session.commit()
    finally:
        engine.dispose()


@contextmanager
def running_server(tree: Path, data_dir: Path) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("WARDEN_")}
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "server.cli", "server", "run", "--data-dir",
               str(data_dir), "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error"]
    process = subprocess.Popen(command, env=env, cwd=tree)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield base_url, psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PeakRss:
    """Samples a process's RSS every 5 ms in a thread, keeping the highest."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)


def burst(base_url: str, usernames: list[str]) -> Counter[int]:
    """Every username posts a wrong password from its own browser, all at once."""
    browsers = [httpx.Client(base_url=base_url, timeout=300) for _ in usernames]
    tokens = []
    for browser in browsers:
        found = _CSRF.search(browser.get("/login").text)
        if found is None:
            raise RuntimeError("the login page has no CSRF token")
        tokens.append(html.unescape(found.group(1)))
    statuses: list[int] = [0] * len(usernames)
    start = threading.Barrier(len(usernames))

    def post(index: int) -> None:
        start.wait()
        statuses[index] = browsers[index].post("/login", data={
            "csrf_token": tokens[index], "method": "password", "username": usernames[index],
            "password": "wrong " + PASSWORD, "next": "/"}).status_code

    threads = [threading.Thread(target=post, args=(index,)) for index in range(len(usernames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for browser in browsers:
        browser.close()
    return Counter(statuses)


def vm_hwm(process: psutil.Process) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a Warden source tree to run the server from (repeat to compare)")
    parser.add_argument("--logins", type=int, default=50)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.tree or [Path(__file__).resolve().parent.parent]]
    bursts = {"one account": ["alice"] * args.logins,
              "many accounts": [f"user{index}" for index in range(args.logins)]}
    print(f"{args.logins} simultaneous wrong logins; RSS in MiB")
    print(f"{'tree':<22} {'burst':<14} {'before':>7} {'peak':>7} {'VmHWM':>7} {'seconds':>8}"
          "  answers")
    for tree in trees:
        for name, usernames in bursts.items():
            with tempfile.TemporaryDirectory() as scratch:
                data_dir = Path(scratch) / "data"
                prepare(data_dir)
                with running_server(tree, data_dir) as (base_url, process):
                    before = process.memory_info().rss
                    with PeakRss(process) as sampled:
                        started = time.perf_counter()
                        answers = burst(base_url, usernames)
                        seconds = time.perf_counter() - started
                    hwm = vm_hwm(process)
            counts = ", ".join(f"{count} x {status}" for status, count in sorted(answers.items()))
            print(f"{str(tree)[-22:]:<22} {name:<14} {before / MIB:>7.0f} "
                  f"{sampled.peak / MIB:>7.0f} {hwm / MIB:>7.0f} {seconds:>8.1f}  {counts}")


if __name__ == "__main__":
    main()
