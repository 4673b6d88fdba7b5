"""Process detection while another sensor is stuck: the part of bench/agent_footprint.py
that holds the installed-apps scan in open(2) of a FIFO nobody writes to."""

from __future__ import annotations

import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.scanning.scanner import Watch
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.processes import ProcessSensor
from agent.settings import load_settings
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy
from policies.observations import InstalledObservation

TIMEOUT = 10.0


class StuckInstalled:
    """An installed-apps source whose scan blocks in open(2) of a FIFO nobody writes to."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.warnings: list[str] = []

    def scan(self) -> list[InstalledObservation]:
        with self.fifo.open("rb") as stream:
            stream.read()
        return []

    def watch_paths(self) -> list[Path]:
        return []

    def recursive_watch_paths(self) -> list[Path]:
        return []


def latency_with_a_stuck_sensor(workdir: Path, banned: Path, samples: int
                                ) -> tuple[list[float], str]:
    """Start -> opened event with the installed-apps scan stuck; and that sensor's state."""
    fifo = workdir / "stuck-fifo"
    os.mkfifo(fifo)
    catalog = load_catalog()
    engine = Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                    HostContext(os="linux" if sys.platform.startswith("linux") else "macos"))
    seen: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
    watch = Watch(engine, Sensors(processes=ProcessSensor(), installed=StuckInstalled(fifo)),
                  lambda event: seen.put((time.perf_counter(), event)),
                  timing=WatchTiming(process_interval=load_settings().process_interval,
                                     sensor_deadline=1.0))
    loop = threading.Thread(target=watch.run, daemon=True)
    loop.start()
    poll(lambda: watch.health()["installed"].state == "stalled", 30)

    def wait_event(kind: str, pid: int) -> float:
        deadline = time.monotonic() + TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            stamp, event = seen.get(timeout=remaining)
            if event.get("event") == kind and event.get("pid") == pid:
                return stamp
        raise TimeoutError(f"no {kind} event for pid {pid}")

    latencies = []
    try:
        for _ in range(samples):
            time.sleep(random.uniform(0.0, 0.5))  # start at a random moment of the tick
            started = time.perf_counter()
            process = subprocess.Popen([str(banned), "60"])
            try:
                latencies.append(wait_event("opened", process.pid) - started)
            finally:
                process.kill()
                process.wait()
            wait_event("resolved", process.pid)
        state = watch.health()["installed"].state
    finally:
        watch.stop()
        loop.join(timeout=10)
        # A writer at last: the stuck open(2) returns and its thread ends.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    return latencies, state


def poll(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the server or agent did not get there in time")
        time.sleep(0.02)
