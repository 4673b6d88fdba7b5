"""What content signatures cost: first identification of an unknown 75 MB binary, the
process sensor's latency for a renamed Telegram Desktop on first sight, the agent's idle
CPU with the content sensor on and off, and memory.

Needs Debian's telegram-desktop (/usr/bin/telegram-desktop, 75 MB) and root (for
`unshare -n`: Telegram runs offscreen with no network). Prints figures; asserts nothing.

    PYTHONPATH=. python bench/content_sensor.py [--runs 5] [--idle-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from agent.scanning.sensor_set import SensorChoice, already_identified, content_identifier
from agent.sensors.processes import ProcessSensor
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy

TELEGRAM = Path("/usr/bin/telegram-desktop")


def engine() -> Engine:
    catalog = load_catalog()
    return Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                  HostContext(os="linux"))


def fresh_copy(folder: Path, name: str) -> Path:
    """A new inode with Telegram's bytes: a file the agent has never seen."""
    target = folder / name
    shutil.copyfile(TELEGRAM, target)
    target.chmod(0o755)
    return target


def unmatched_copy(folder: Path, name: str) -> Path:
    """Telegram with every signature string defaced: a 75 MB ELF no signature names, so
    it is read to its end (the worst case for a new binary)."""
    data = TELEGRAM.read_bytes()
    for text in ("tdesktop", "TelegramDesktop", "TelegramForcePortable"):
        for form in (text.encode(), text.encode("utf-16-le")):
            data = data.replace(form, bytes(len(form)))
    target = folder / name
    target.write_bytes(data)
    return target


def full_read(folder: Path, runs: int) -> None:
    identifier = content_identifier(engine(), SensorChoice())
    assert identifier is not None
    cpu, wall = [], []
    for run in range(runs):
        path = unmatched_copy(folder, f"other-{run}")
        started, started_cpu = time.perf_counter(), time.process_time()
        assert identifier.identify_file(path, beneath=folder) == ()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        path.unlink()
    print(f"first look at an unknown 75 MB binary no signature names (read to its end), "
          f"{runs} runs: CPU ms median {statistics.median(cpu):.0f} (min {min(cpu):.0f}, "
          f"max {max(cpu):.0f}); wall ms median {statistics.median(wall):.0f}")


def first_identification(folder: Path, runs: int) -> None:
    the_engine = engine()
    cpu, wall, read_only = [], [], []
    # One identifier, as in a running agent (its package index loaded, its matcher built);
    # each run's file is a new inode, so it is unknown to the cache.
    identifier = content_identifier(the_engine, SensorChoice())
    assert identifier is not None
    started_cpu = time.process_time()
    identifier.identify_file(Path(sys.executable).resolve(), beneath=Path("/"))
    print(f"agent start: package index and matcher ready in "
          f"{(time.process_time() - started_cpu) * 1000:.0f} ms CPU")
    for run in range(runs):
        path = fresh_copy(folder, f"unknown-{run}")
        started, started_cpu = time.perf_counter(), time.process_time()
        refs = identifier.identify_file(path, beneath=folder)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        assert refs, "Telegram was not identified"
        # The same bytes read with no matching: what the read alone costs.
        started_cpu = time.process_time()
        with path.open("rb") as handle:
            while handle.read(4 << 20):
                pass
        read_only.append((time.process_time() - started_cpu) * 1000)
        again = time.perf_counter()
        identifier.identify_file(path, beneath=folder)
        cached = (time.perf_counter() - again) * 1000
        path.unlink()
    size = TELEGRAM.stat().st_size / 1e6
    print(f"first identification of an unknown {size:.1f} MB binary (page cache warm), "
          f"{runs} runs: CPU ms median {statistics.median(cpu):.0f} "
          f"(min {min(cpu):.0f}, max {max(cpu):.0f}); wall ms median "
          f"{statistics.median(wall):.0f} (min {min(wall):.0f}, max {max(wall):.0f}); "
          f"plain read alone CPU ms median {statistics.median(read_only):.0f}; "
          f"second look (cache) {cached:.2f} ms")


def process_latency(folder: Path, runs: int, tick: float = 0.25) -> None:
    """Popen of a renamed Telegram -> the process sensor's finding, ticking as the agent
    does (every 0.25 s); each run a new copy, so nothing is cached."""
    the_engine = engine()
    latencies, costs = [], []
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "QT_QPA_PLATFORM": "offscreen",
           "XDG_RUNTIME_DIR": str(folder)}
    identifier = content_identifier(the_engine, SensorChoice())
    for run in range(runs):
        program = fresh_copy(folder, f"notes-{run}")
        sensor = ProcessSensor(content=identifier, identified=already_identified(the_engine))
        sensor.scan()
        started = time.perf_counter()
        child = subprocess.Popen(["unshare", "-n", str(program)], env=env,
                                 start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            found = None
            while found is None and time.perf_counter() - started < 30:
                tick_cpu = time.process_time()
                changes = sensor.poll()
                for observation in changes.new:
                    if observation.pid == child.pid and observation.content:
                        found = time.perf_counter() - started
                        costs.append((time.process_time() - tick_cpu) * 1000)
                if found is None:
                    time.sleep(tick)  # the agent's tick interval
            latencies.append(found if found is not None else float("nan"))
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            program.unlink()
    print(f"renamed Telegram started -> content finding, {runs} runs, 0.25 s ticks: "
          f"median {statistics.median(latencies) * 1000:.0f} ms, max "
          f"{max(latencies) * 1000:.0f} ms; CPU of the tick that read it: median "
          f"{statistics.median(costs):.0f} ms")


def idle_agent(seconds: float) -> None:
    """`warden-agent watch` with and without --no-content: CPU over `seconds` once settled,
    and resident memory."""
    for label, flags in (("content on", []), ("content off", ["--no-content"])):
        with tempfile.TemporaryDirectory() as state:
            env = {**os.environ, "WARDEN_AGENT_STATE_DIR": state}
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "watch", "--json", "--no-network",
                 *flags], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True)
            try:
                assert agent.stderr is not None
                while "watching" not in agent.stderr.readline():
                    pass
                process = psutil.Process(agent.pid)
                time.sleep(5)  # let the first installed-apps scan finish
                before = process.cpu_times()
                time.sleep(seconds)
                after = process.cpu_times()
                used = (after.user + after.system - before.user - before.system)
                rss = process.memory_info().rss / 2**20
                print(f"agent watch ({label}): CPU {used / seconds * 100:.2f} % of a core "
                      f"over {seconds:.0f} s; RSS {rss:.1f} MiB")
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    if not TELEGRAM.is_file():
        sys.exit("needs Debian's telegram-desktop: apt-get install telegram-desktop")
    with tempfile.TemporaryDirectory() as folder:
        first_identification(Path(folder), args.runs)
        full_read(Path(folder), args.runs)
        process_latency(Path(folder), args.runs)
    idle_agent(args.idle_seconds)


if __name__ == "__main__":
    main()
