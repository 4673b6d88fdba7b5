"""What bench/server_load.py measures (phases, one per backend) and the Markdown it prints."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import dataclass, field

from load_database import BATCH_EVENTS

TARGET_AGENTS = 20_000
TARGET_INTERVAL_S = 60
TARGET_RATE = TARGET_AGENTS / TARGET_INTERVAL_S  # 333 check-ins per second
TARGET_P99_MS = 100.0
# The agent-API phases `--phases` can pick, in the order they run.
PHASE_KINDS = ("checkin", "poll", "events", "open")


@dataclass
class Phase:
    name: str
    kind: str = ""
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    events: int = 0
    cpu_percent: float | None = None

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float | None:
        # Server CPU time per answer: unlike requests/s it hardly moves when other work
        # on the machine competes for the cores, so it compares runs on a busy box.
        if self.cpu_percent is None or not self.latencies_ms:
            return None
        return self.cpu_percent / 100 * self.seconds * 1000 / len(self.latencies_ms)


@dataclass
class Backend:
    name: str
    phases: list[Phase] = field(default_factory=list)
    raw_events_per_second: float = 0.0
    # The same, writing every row ingest writes: events, findings, the violation.
    raw_rows_per_second: float = 0.0
    reads: list[Phase] = field(default_factory=list)

    def phase(self, kind: str) -> Phase | None:
        return next((phase for phase in self.phases if phase.kind == kind), None)


def report(backends: list[Backend], *, agents: int, concurrency: int, seconds: float,
           findings: int, read_rounds: int) -> None:
    print(f"Warden server load — {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{agents} agents, {concurrency} requests in flight "
          f"({max(4, concurrency // 4)} for event batches), {seconds:g} s a phase, "
          f"{dt.date.today().isoformat()}")
    print()
    print("| database | phase | requests/s | p50 ms | p99 ms | events/s | server CPU "
          "| CPU ms/req | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for backend in backends:
        for phase in backend.phases:
            events = f"{phase.events_per_second:,.0f}" if phase.events else "-"
            cpu_ms = phase.cpu_ms_per_request
            print(f"| {backend.name} | {phase.name} | {phase.rate:,.0f} | "
                  f"{phase.percentile(0.5):.1f} | {phase.percentile(0.99):.1f} | {events} | "
                  f"{phase.cpu_percent:.0f} % | {'-' if cpu_ms is None else f'{cpu_ms:.2f}'} "
                  f"| {phase.errors} |")
        if backend.raw_events_per_second:
            print(f"| {backend.name} | raw executemany, same rows ({BATCH_EVENTS}/commit) | - "
                  f"| - | - | {backend.raw_events_per_second:,.0f} | - | - | - |")
        if backend.raw_rows_per_second:
            print(f"| {backend.name} | raw executemany, events + findings + violation "
                  f"({BATCH_EVENTS} events/commit) | - | - | - | "
                  f"{backend.raw_rows_per_second:,.0f} | - | - | - |")
    print()
    for backend in backends:
        _summary(backend)
    if any(backend.reads for backend in backends):
        print()
        print(f"Review API over {findings:,} findings ({read_rounds} requests each):")
        print()
        print("| database | read | p50 ms | max ms |")
        print("| --- | --- | ---: | ---: |")
        for backend in backends:
            for phase in backend.reads:
                extra = f" ({phase.events:,} rows)" if phase.events else ""
                print(f"| {backend.name} | {phase.name}{extra} | {phase.percentile(0.5):.1f} | "
                      f"{max(phase.latencies_ms):.1f} |")


def _summary(backend: Backend) -> None:
    ingest = backend.phase("events")
    if ingest is not None and backend.raw_events_per_second:
        ratio = ingest.events_per_second / backend.raw_events_per_second
        print(f"{backend.name}: ingest / raw executemany = {ratio:.2f} "
              f"({ingest.events_per_second:,.0f} vs {backend.raw_events_per_second:,.0f} "
              "events/s)")
    if ingest is not None and backend.raw_rows_per_second:
        ratio = ingest.events_per_second / backend.raw_rows_per_second
        print(f"{backend.name}: ingest / raw executemany of every row it writes = {ratio:.2f} "
              f"({ingest.events_per_second:,.0f} vs {backend.raw_rows_per_second:,.0f} "
              "events/s)")
    checkins, at_target = backend.phase("checkin"), backend.phase("open")
    if checkins is None or at_target is None:
        return  # the verdict needs both the peak rate and the latency at the target rate
    meets = (checkins.rate >= TARGET_RATE and at_target.percentile(0.99) < TARGET_P99_MS
             and at_target.errors == 0)
    print(f"{backend.name}: {TARGET_AGENTS:,} agents every {TARGET_INTERVAL_S} s = "
          f"{TARGET_RATE:.0f} check-ins/s; measured at most {checkins.rate:,.0f}/s "
          f"({checkins.rate / TARGET_RATE:.1f}x, i.e. {checkins.rate * TARGET_INTERVAL_S:,.0f}"
          f" agents a minute); at {TARGET_RATE:.0f}/s p99 = "
          f"{at_target.percentile(0.99):.1f} ms -> one process "
          f"{'meets' if meets else 'does NOT meet'} the target (p99 < {TARGET_P99_MS:.0f} ms)")
