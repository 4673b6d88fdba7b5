"""The watching agent's footprint on a machine with 1,000 extra idle processes.

Measures, and prints as a markdown table:
- CPU (% of one core) and RSS of `warden-agent watch --json --no-network`
  over a steady period with nothing happening;
- latency from a banned process's start to its finding line (median, p95);
- the same latency while the installed-apps sensor is stuck for good in
  open(2) of a FIFO (a dead NFS home): the watch loop in this process, its
  process tick on default timing, the stuck scan on its worker;
- one full process scan (sensor + engine) against `ps -eo pid,comm,args`;
- end to end: from a banned process's start to its finding being visible in
  the server's API, with `warden server run` and `warden-agent run` on default
  settings (median, p95).

Run: .venv/bin/python bench/agent_footprint.py [--processes 1000] [--steady 20] [--samples 25]
Bounded to well under three minutes; every child is cleaned up on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psutil
import requests

# Run as `python bench/agent_footprint.py`: the checkout's root holds bench/ as a package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.sensors.network import NetworkSensor, PsutilTable
from agent.sensors.process_readers import PsutilReader
from agent.sensors.processes import ProcessSensor
from agent.settings import load_settings
from bench.stuck_sensor import TIMEOUT, latency_with_a_stuck_sensor, poll
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy
from policies.observations import ConnectionObservation

SLEEP = shutil.which("sleep") or "/bin/sleep"
AGENT = str(Path(sys.executable).with_name("warden-agent"))


class Lines:
    """A child's output lines, read on a thread, waited for with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            # Stamp on arrival: the reader thread is idle, waiting on the pipe.
            self.queue.put((time.perf_counter(), line))

    def wait(self, check: Callable[[str], bool], timeout: float = TIMEOUT) -> float:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                stamp, line = self.queue.get(timeout=remaining)
            except queue.Empty:
                break
            if check(line):
                return stamp
        raise TimeoutError("no matching line from the agent")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def is_event(kind: str, pid: int) -> Callable[[str], bool]:
    def check(line: str) -> bool:
        event = json.loads(line)
        return bool(event.get("event") == kind and event.get("pid") == pid)

    return check


def last_pid() -> int | None:
    """The kernel's last handed-out pid (Linux), to tell how idle the machine really was."""
    try:
        with open("/proc/loadavg", "rb") as handle:
            return int(handle.read().rsplit(None, 1)[-1])
    except (OSError, ValueError):
        return None


def steady_footprint(agent: psutil.Process, seconds: float
                     ) -> tuple[float, float, float, str]:
    """(CPU % of one core, peak RSS in MB, USS in MB at the end, processes created meanwhile).

    RSS counts the shared libraries' pages (libpython, OpenSSL, the extension
    modules) that every Python process on the machine shares; USS is the memory
    the agent alone holds, what the machine gets back when it stops.
    """
    first_pid = last_pid()
    before = agent.cpu_times()
    start = time.monotonic()
    peak = agent.memory_info().rss
    while time.monotonic() - start < seconds:
        time.sleep(0.5)  # a sampling period, not synchronisation
        peak = max(peak, agent.memory_info().rss)
    after = agent.cpu_times()
    elapsed = time.monotonic() - start
    final_pid = last_pid()
    used = (after.user - before.user) + (after.system - before.system)
    created = "?" if first_pid is None or final_pid is None else str(
        (final_pid - first_pid) % (1 << 22))
    uss = agent.memory_full_info().uss
    return 100.0 * used / elapsed, peak / 1e6, uss / 1e6, created


def detection_latency(lines: Lines, banned: Path, samples: int) -> list[float]:
    latencies = []
    for _ in range(samples):
        # Start at a random moment relative to the agent's tick.
        time.sleep(random.uniform(0.0, 0.5))
        started = time.perf_counter()
        process = subprocess.Popen([str(banned), "60"])
        try:
            seen = lines.wait(is_event("opened", process.pid))
            latencies.append(seen - started)
        finally:
            process.kill()
            process.wait()
        lines.wait(is_event("resolved", process.pid))
    return latencies


def timed(action: Callable[[], object], runs: int) -> float:
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def scan_costs(runs: int) -> tuple[float, float, float]:
    """Median seconds: our full scan (+ engine), the psutil-only scan, and `ps`."""
    catalog = load_catalog()
    engine = Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                    HostContext(os="linux" if sys.platform.startswith("linux") else "macos"))

    def ours() -> None:
        engine.evaluate_all(ProcessSensor().scan())

    def portable() -> None:
        engine.evaluate_all(ProcessSensor(PsutilReader()).scan())

    def ps() -> None:
        subprocess.run(["ps", "-eo", "pid,comm,args"], check=True, stdout=subprocess.DEVNULL)

    for action in (ours, portable, ps):  # warm caches and the page cache once
        action()
    return timed(ours, runs), timed(portable, runs), timed(ps, runs)


def network_costs(runs: int) -> tuple[float, float]:
    """Median seconds of one network listing as the agent does it, and via psutil."""
    catalog = load_catalog()
    engine = Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                    HostContext(os="linux" if sys.platform.startswith("linux") else "macos"))

    def wanted(observation: ConnectionObservation) -> bool:
        return bool(engine.evaluate(observation))

    ours, portable = NetworkSensor(), NetworkSensor(table=PsutilTable())
    return (timed(lambda: ours.scan(wanted), runs),
            timed(lambda: portable.scan(wanted), runs))


def server_visible_latency(workdir: Path, banned: Path, samples: int) -> list[float]:
    """Start a real server and a real agent; time start -> finding in GET /api/v1/findings."""
    bin_dir = Path(sys.executable).parent
    data = workdir / "server"
    init = subprocess.run([str(bin_dir / "warden"), "server", "init", "--data-dir", str(data),
                           "--json"], capture_output=True, text=True, check=True)
    tokens = json.loads(init.stdout)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {tokens['admin_token']}"}
    env = {**os.environ, "WARDEN_AGENT_SERVER_URL": url,
           "WARDEN_AGENT_ENROLL_SECRET": tokens["enroll_secret"],
           "WARDEN_AGENT_STATE_DIR": str(workdir / "agent"),
           "WARDEN_AGENT_NOTIFY_COMMAND": "true"}
    children = [subprocess.Popen([str(bin_dir / "warden"), "server", "run", "--data-dir",
                                  str(data), "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    latencies: list[float] = []
    try:
        poll(lambda: _get(f"{url}/healthz", headers) is not None, 60)
        children.append(subprocess.Popen([str(bin_dir / "warden-agent"), "run"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        poll(lambda: bool((_get(f"{url}/api/v1/agents", headers) or {}).get("items")), 60)
        for _ in range(samples):
            started = time.perf_counter()
            process = subprocess.Popen([str(banned), "600"])
            try:
                poll(lambda pid=process.pid: _visible(url, headers, pid), 30)
                latencies.append(time.perf_counter() - started)
            finally:
                process.kill()
                process.wait()
            time.sleep(random.uniform(0.1, 0.3))  # spread starts over the tick phase
    finally:
        for child in reversed(children):
            child.terminate()
            child.wait(timeout=30)
    return latencies


def _get(url: str, headers: dict[str, str]) -> dict[str, object] | None:
    try:
        response = requests.get(url, headers=headers, timeout=5)
    except requests.ConnectionError:
        return None
    return response.json() if response.ok else None  # type: ignore[no-any-return]


def _visible(url: str, headers: dict[str, str], pid: int) -> bool:
    answer = _get(f"{url}/api/v1/findings?app=telegram&status=open&limit=50", headers) or {}
    items = answer.get("items") or []
    return any(item["evidence"].get("pid") == pid for item in items)  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of idle sampling")
    parser.add_argument("--samples", type=int, default=25, help="latency samples")
    parser.add_argument("--runs", type=int, default=9, help="timed full scans")
    parser.add_argument("--agent-args", default="", help="extra `watch` arguments")
    parser.add_argument("--e2e-samples", type=int, default=20,
                        help="start -> visible-in-server-API samples (0 to skip)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    banned = workdir / "telegram-desktop"
    shutil.copyfile(SLEEP, banned)
    banned.chmod(0o755)
    # The agent and this script read the same settings: defaults unless the
    # environment says otherwise, never a config file of this machine.
    os.environ["WARDEN_AGENT_CONFIG"] = str(workdir / "none.toml")
    env = dict(os.environ)
    idle: list[subprocess.Popen[bytes]] = []
    agent: subprocess.Popen[str] | None = None
    try:
        idle = [subprocess.Popen([SLEEP, "600"]) for _ in range(args.processes)]
        total = len(psutil.pids())
        started = time.perf_counter()
        agent = subprocess.Popen(
            [AGENT, "watch", "--json", "--no-network", *args.agent_args.split()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert agent.stdout is not None and agent.stderr is not None
        Lines(agent.stderr).wait(lambda line: "watching" in line, timeout=60)
        ready = time.perf_counter() - started
        lines = Lines(agent.stdout)
        watched = psutil.Process(agent.pid)
        time.sleep(2.0)  # let start-up work settle before measuring the idle state
        cpu, rss, uss, created = steady_footprint(watched, args.steady)
        latencies = detection_latency(lines, banned, args.samples)
        stuck, stuck_state = latency_with_a_stuck_sensor(workdir, banned, args.samples)
        ours, portable, ps = scan_costs(args.runs)
        network, network_psutil = network_costs(args.runs)
        network_interval = load_settings().network_interval
        interval = load_settings().process_interval
        visible = (server_visible_latency(workdir, banned, args.e2e_samples)
                   if args.e2e_samples else [])
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=10)
        for process in idle:
            process.kill()
        for process in idle:
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    rows = [
        ("processes on the machine", f"{total}", ""),
        ("processes/threads created by others during the idle period", created, ""),
        ("agent start-up (first process scan; the other sensors started)", f"{ready:.2f} s", ""),
        (f"idle CPU over {args.steady:.0f} s (process tick {interval} s)",
         f"{cpu:.2f} % of one core", "<= 0.5 %"),
        ("peak RSS", f"{rss:.1f} MB", "<= 50 MB"),
        ("USS (memory the agent alone holds)", f"{uss:.1f} MB", ""),
        (f"detection latency, median of {len(latencies)}", f"{median * 1000:.0f} ms", ""),
        ("detection latency, p95", f"{p95 * 1000:.0f} ms", "<= 1000 ms"),
        (f"detection latency with the installed-apps scan stuck ({stuck_state}), "
         f"median of {len(stuck)}", f"{statistics.median(stuck) * 1000:.0f} ms", ""),
        ("detection latency with the installed-apps scan stuck, p95",
         f"{percentile(stuck, 0.95) * 1000:.0f} ms", "<= 1000 ms"),
        ("full process scan + engine (agent)", f"{ours * 1000:.1f} ms", ""),
        ("full process scan + engine (psutil reader)", f"{portable * 1000:.1f} ms", ""),
        ("`ps -eo pid,comm,args`", f"{ps * 1000:.1f} ms", ""),
        ("full scan / ps", f"{ours / ps:.2f}x", "<= 1.5x"),
        ("one network listing (agent; owners looked up only for matches)",
         f"{network * 1000:.1f} ms", ""),
        ("one network listing via psutil (owners of every socket)",
         f"{network_psutil * 1000:.1f} ms", ""),
        (f"network sensor's CPU at one listing per {network_interval:g} s",
         f"{100 * network / network_interval:.3f} % of one core", ""),
    ]
    if visible:
        rows += [
            (f"start -> visible in the server API, median of {len(visible)}",
             f"{statistics.median(visible) * 1000:.0f} ms", ""),
            ("start -> visible in the server API, p95",
             f"{percentile(visible, 0.95) * 1000:.0f} ms", "<= 3000 ms"),
        ]
    print("| measure | value | target |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
