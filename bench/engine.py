"""Engine throughput against the whole stock catalog.

Prints evaluations per second for 1,000 process observations and for 10,000
connections, each evaluated against a policy that names every catalog app.
Run: .venv/bin/python bench/engine.py
"""

from __future__ import annotations

import random
import time

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import load_catalog, parse_policy
from policies.observations import ConnectionObservation, ProcessObservation

ROUNDS = 5


def whole_catalog_engine(os_name: str) -> Engine:
    catalog = load_catalog()
    rules = "".join(
        f"  - app: {app_id}\n    verdict: {'allow' if app_id == 'signal' else 'deny'}\n"
        for app_id in sorted(catalog)
    )
    policy = parse_policy(f"name: everything\nrules:\n{rules}", "bench", catalog)
    return Engine(compile_bundle(policy, catalog), HostContext(os=os_name))  # type: ignore[arg-type]


def processes(rng: random.Random) -> list[ProcessObservation]:
    names = ["bash", "sshd", "python3", "systemd", "chrome", "code", "Telegram", "signal-desktop"]
    out = []
    for pid in range(1000):
        name = rng.choice(names) if rng.random() < 0.3 else f"worker-{pid}"
        exe = f"/usr/lib/app{pid % 50}/bin/{name}"
        out.append(ProcessObservation(pid=pid, name=name, create_time=float(pid), exe=exe,
                                      cmdline=(exe, "--flag", str(pid))))
    return out


def connections(rng: random.Random) -> list[ConnectionObservation]:
    out = []
    for i in range(10_000):
        if i % 100 == 0:
            ip = f"149.154.{rng.randint(160, 175)}.{rng.randint(1, 254)}"  # Telegram
        elif i % 3 == 0:
            ip = f"2a00:1450:4001:{rng.randint(0, 0xffff):x}::{rng.randint(1, 0xffff):x}"
        else:
            ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        out.append(ConnectionObservation(remote_ip=ip, remote_port=rng.choice([443, 80, 5222]),
                                         pid=i))
    return out


def rate(engine: Engine, observations: list) -> tuple[float, int]:
    best = float("inf")
    hits = 0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        hits = sum(len(engine.evaluate(obs)) for obs in observations)
        best = min(best, time.perf_counter() - start)
    return len(observations) / best, hits


def main() -> None:
    rng = random.Random(7)
    start = time.perf_counter()
    engine = whole_catalog_engine("linux")
    build_ms = (time.perf_counter() - start) * 1000
    proc_rate, proc_hits = rate(engine, processes(rng))
    conn_rate, conn_hits = rate(engine, connections(rng))
    windows = whole_catalog_engine("windows")
    win_rate, _ = rate(windows, processes(rng))
    print("| measure | figure |")
    print("| --- | --- |")
    print(f"| engine build (whole catalog, load + compile + index) | {build_ms:.0f} ms |")
    print(f"| 1,000 process observations, Linux rules | {proc_rate:,.0f} evaluations/s "
          f"({proc_hits} findings) |")
    print(f"| 1,000 process observations, Windows rules | {win_rate:,.0f} evaluations/s |")
    print(f"| 10,000 connections (IPv4 + IPv6) | {conn_rate:,.0f} evaluations/s "
          f"({conn_hits} findings) |")


if __name__ == "__main__":
    main()
