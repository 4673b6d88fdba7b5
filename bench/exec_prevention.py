"""Exec prevention's cost: exec rate with and without the blocker, decision and detection latency.

Run as root: `python bench/exec_prevention.py`. It re-runs itself in a private
mount namespace (unshare -m) with its own tmpfs, so only that namespace is
guarded. Prints: N runs of /bin/true without and with the blocker (ratio),
the blocker's decision latency p50/p99, its CPU during the burst, and exec
event -> finding latency p50/p95 of a process named Telegram.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.prevention.blocker import Blocker
from agent.scanning.scanner import Watch
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.exec_events import ExecEvents
from agent.sensors.processes import ProcessSensor
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import load_catalog, parse_policy

RUNS = int(os.environ.get("BENCH_RUNS", "1000"))
POLICY = "name: bench\nmode: enforce\nrules:\n  - {app: telegram, verdict: deny, action: block}\n"


def engine() -> Engine:
    catalog = load_catalog()
    return Engine(compile_bundle(parse_policy(POLICY, "bench", catalog), catalog),
                  HostContext(os="linux"))


def burst(program: str) -> float:
    started = time.perf_counter()
    for _ in range(RUNS):
        subprocess.run([program], check=True)
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def serve() -> None:
    blocker = Blocker(engine(), lambda blocked: None, measure=True)
    blocker.start()
    print("ready", flush=True)
    sys.stdin.readline()
    times = os.times()
    lat = blocker.stats.latencies
    print(json.dumps({"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "decisions": len(lat),
                      "cpu_s": times.user + times.system}), flush=True)


def in_namespace() -> None:
    root = Path(tempfile.mkdtemp())
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root)], check=True)
    shutil.copy("/bin/true", root / "true")
    program = str(root / "true")
    burst(program)  # warm the page cache
    without = burst(program)
    agent = subprocess.Popen([sys.executable, __file__, "serve"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None and agent.stdin is not None
    agent.stdout.readline()
    with_blocker = burst(program)
    agent.stdin.write("done\n")
    agent.stdin.flush()
    stats = json.loads(agent.stdout.readline())
    agent.wait()
    print(f"{RUNS} runs of /bin/true: {without:.2f} s without the blocker, "
          f"{with_blocker:.2f} s with it ({with_blocker / without:.2f}x)")
    print(f"decision latency: p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms "
          f"over {stats['decisions']} decisions; blocker CPU {stats['cpu_s']:.2f} s "
          f"for the burst ({stats['cpu_s'] / with_blocker * 100:.0f}% of one core)")


def detection() -> None:
    found: dict[int, float] = {}
    done = threading.Event()

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "opened":
            found[event["evidence"]["pid"]] = time.perf_counter()
            done.set()

    watch = Watch(engine(), Sensors(processes=ProcessSensor(young_seconds=0),
                                    exec_events=ExecEvents()), emit,
                  timing=WatchTiming(process_interval=3600.0, process_rescan_interval=3600.0))
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    folder = Path(tempfile.mkdtemp())
    shutil.copy("/bin/sleep", folder / "Telegram")
    latencies = []
    for _ in range(50):
        done.clear()
        started = time.perf_counter()
        process = subprocess.Popen([str(folder / "Telegram"), "5"])
        if done.wait(5.0) and process.pid in found:
            latencies.append(found[process.pid] - started)
        process.kill()
        process.wait()
    watch.stop()
    print(f"exec -> finding (exec events, polling off): p50 {pct(latencies, 0.5):.1f} ms, "
          f"p95 {pct(latencies, 0.95):.1f} ms over {len(latencies)} launches")


def main() -> None:
    if sys.argv[1:] == ["serve"]:
        serve()
    elif sys.argv[1:] == ["inside"]:
        in_namespace()
    else:
        subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, __file__,
                        "inside"], check=True)
        detection()


if __name__ == "__main__":
    main()
