"""The agent service's memory: RSS and USS of `warden-agent run` against a real server.

Two agents in turn, each enrolled with a real `warden server run` (SQLite) on loopback,
over HTTPS (a self-signed certificate the agents are given as their CA bundle):
- idle: default settings; measured once every sensor finished its first scan and
  the agent sat idle for `--settle` seconds;
- busy: the installed-apps scan every `--rescan` seconds and the network listing
  every second, while programs it has never seen start (a renamed copy of `sleep`
  each scan, and every `--telegram-every` scans a renamed copy of Debian's
  telegram-desktop, 75 MB, whose bytes the content sensor reads and which opens a
  finding): measured after its first full scan, then after `--scans` installed-apps
  scans (an hour of the default settings' scans, and many more of the others), and
  the peak over the run (the kernel's high-water mark, VmHWM).

RSS counts the pages of shared libraries (libpython, OpenSSL, the extension
modules) that other processes share too; USS (psutil's memory_full_info) is what
the machine gets back when the agent stops. Needs root for `unshare -n` (Telegram
runs offscreen with no network); without telegram-desktop only the small programs run.

Run: PYTHONPATH=. python bench/agent_memory.py [--scans 50] [--rescan 2]
Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

BIN = Path(sys.executable).parent
SLEEP = shutil.which("sleep") or "/bin/sleep"
TELEGRAM = Path("/usr/bin/telegram-desktop")
TIMEOUT = 120.0


def poll(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the agent did not get there in time")
        time.sleep(0.2)


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key: the server's, and the agents' CA bundle."""
    cert, key = workdir / "server.pem", workdir / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    """`warden server run` over HTTPS, as agents meet it in production: (server, its URL,
    the enrollment secret, the CA bundle that trusts it)."""
    data = workdir / "server"
    init = subprocess.run([str(BIN / "warden"), "server", "init", "--data-dir", str(data),
                           "--json"], capture_output=True, text=True, check=True)
    secret = json.loads(init.stdout)["enroll_secret"]
    cert, key = self_signed(workdir)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    server = subprocess.Popen([str(BIN / "warden"), "server", "run", "--data-dir", str(data),
                               "--port", str(port), "--tls-cert", str(cert),
                               "--tls-key", str(key)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def healthy() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=2, verify=str(cert)).ok
        except requests.ConnectionError:
            return False

    poll(healthy, 60)
    return server, url, secret, cert


class Agent:
    """A `warden-agent run` child, and what its status file says."""

    def __init__(self, workdir: Path, url: str, secret: str, ca_bundle: Path,
                 settings: dict[str, str]) -> None:
        self.state = workdir / "state"
        env = {**os.environ, "WARDEN_AGENT_SERVER_URL": url,
               "WARDEN_AGENT_ENROLL_SECRET": secret,
               "WARDEN_AGENT_STATE_DIR": str(self.state),
               "WARDEN_AGENT_CA_BUNDLE": str(ca_bundle),
               "WARDEN_AGENT_NOTIFY_COMMAND": "true",
               "WARDEN_AGENT_CONFIG": str(workdir / "none.toml"),
               "WARDEN_AGENT_ENV_FILE": str(workdir / "none.env"),
               **{f"WARDEN_AGENT_{name.upper()}": value for name, value in settings.items()}}
        self.child = subprocess.Popen([str(BIN / "warden-agent"), "run"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.process = psutil.Process(self.child.pid)

    def status(self) -> dict[str, object]:
        """A fresh status: SIGUSR1 makes the agent check in, which rewrites status.json."""
        path = self.state / "status.json"
        if not path.exists():
            return {}
        before = path.stat().st_mtime_ns
        self.child.send_signal(signal.SIGUSR1)
        with contextlib.suppress(TimeoutError):  # no check-in: the file as it is
            poll(lambda: path.stat().st_mtime_ns != before, 10)
        self.sample()
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):  # caught mid-write
            return {}

    def last_ok(self, sensor: str) -> str | None:
        sensors = self.status().get("sensors") or {}
        return (sensors.get(sensor) or {}).get("last_ok")  # type: ignore[union-attr]

    def scanned(self) -> bool:
        """Every sensor finished a scan (the process, installed-apps and network ones)."""
        sensors = self.status().get("sensors") or {}
        return all((sensors.get(name) or {}).get("last_ok")  # type: ignore[union-attr]
                   for name in ("process", "installed", "network"))

    def sample(self) -> tuple[float, float]:
        """(RSS, USS) in MiB now."""
        memory = self.process.memory_full_info()
        return memory.rss / 2**20, memory.uss / 2**20

    def peak(self) -> float:
        """The kernel's high-water mark of its RSS (Linux's VmHWM), in MiB: every moment
        counts, not only those sampled."""
        status = Path(f"/proc/{self.child.pid}/status").read_text()
        [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.child.terminate()
        self.child.wait(timeout=30)


def idle_run(workdir: Path, server: tuple[str, str, Path], settle: float
             ) -> tuple[float, float, float]:
    """(RSS, USS, peak RSS) once idle."""
    agent = Agent(workdir / "idle", *server, {})
    try:
        poll(agent.scanned)
        time.sleep(settle)  # the idle state, not synchronisation
        return (*agent.sample(), agent.peak())
    finally:
        agent.stop()


def busy_run(workdir: Path, server: tuple[str, str, Path], args: argparse.Namespace
             ) -> dict[str, tuple[float, float] | float | int]:
    folder = workdir / "programs"
    folder.mkdir()
    agent = Agent(workdir / "busy", *server, {
        "installed_rescan_interval": str(args.rescan), "network_interval": "1"})
    running: list[subprocess.Popen[bytes]] = []
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "QT_QPA_PLATFORM": "offscreen",
           "XDG_RUNTIME_DIR": str(folder)}
    try:
        poll(agent.scanned)
        time.sleep(args.settle)
        first = agent.sample()
        seen: set[str] = set()
        started = time.monotonic()
        while len(seen) < args.scans:
            when = agent.last_ok("installed")
            if when is None or when in seen:
                time.sleep(0.5)
                continue
            seen.add(when)
            count = len(seen)
            if TELEGRAM.is_file() and count % args.telegram_every == 0:
                program = folder / f"notes-{count}"
                shutil.copyfile(TELEGRAM, program)
                command = ["unshare", "-n", str(program)]
            else:
                program = folder / f"tool-{count}"
                shutil.copyfile(SLEEP, program)
                command = [str(program), "600"]
            program.chmod(0o755)
            running.append(subprocess.Popen(command, env=env, start_new_session=True,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
            # Programs come and go: keep the last few running.
            while len(running) > 4:
                stop_group(running.pop(0))
        elapsed = time.monotonic() - started
        for child in running:
            stop_group(child)
        running.clear()
        time.sleep(args.settle)
        agent.status()  # the findings resolved, uploaded; a last sample
        after = agent.sample()
        return {"first": first, "after": after, "peak": agent.peak(),
                "scans": len(seen), "seconds": elapsed,
                "threads": agent.process.num_threads()}
    finally:
        for child in running:
            stop_group(child)
        agent.stop()


def stop_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=50, help="installed-apps scans, busy run")
    parser.add_argument("--rescan", type=float, default=2.0,
                        help="seconds between installed-apps scans, busy run")
    parser.add_argument("--telegram-every", type=int, default=10,
                        help="start a renamed Telegram every this many scans")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before sampling")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="warden-memory-"))
    server = None
    try:
        server, url, secret, ca_bundle = start_server(workdir)
        idle = idle_run(workdir, (url, secret, ca_bundle), args.settle)
        busy = busy_run(workdir, (url, secret, ca_bundle), args)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    first, after = busy["first"], busy["after"]
    assert isinstance(first, tuple) and isinstance(after, tuple)
    rows = [
        ("idle, default settings, after the first full scan", *idle[:2]),
        ("busy, after the first full scan", *first),
        (f"busy, after {busy['scans']} installed-apps scans ({busy['seconds']:.0f} s)",
         *after),
    ]
    print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print("| agent (`warden-agent run`) | RSS MiB | USS MiB |")
    print("| --- | ---: | ---: |")
    for label, rss, uss in rows:
        print(f"| {label} | {rss:.1f} | {uss:.1f} |")
    print(f"| idle, peak RSS (start-up included) | {idle[2]:.1f} | |")
    print(f"| busy, peak RSS | {busy['peak']:.1f} | |")
    print(f"threads at the end: {busy['threads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
