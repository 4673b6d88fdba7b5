"""What bench/fleet.py measures, and the Markdown it prints."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
from collections import Counter
from dataclasses import dataclass, field

from fleet_cluster import Usage
from load_report import TARGET_P99_MS, Phase

PAGES = ("/", "/violations", "/findings")


@dataclass
class Traffic:
    """One kind of request: what was scheduled, sent and answered, and how fast."""

    name: str
    scheduled: int = 0
    sent: int = 0
    from_schedule: Phase = field(default_factory=lambda: Phase("from schedule"))
    from_send: Phase = field(default_factory=lambda: Phase("from send"))
    errors: Counter[str] = field(default_factory=Counter)
    events_sent: int = 0
    events_acknowledged: int = 0

    @property
    def answered(self) -> int:
        return len(self.from_send.latencies_ms)


@dataclass
class Run:
    agents: int
    interval: float
    seconds: float
    checkins: Traffic
    batches: Traffic
    pages: dict[str, Traffic]
    pages_alone: dict[str, Traffic]
    loads: list[float] = field(default_factory=list)
    usage: Usage | None = None
    pages_alone_usage: Usage | None = None
    proxy_news: list[str] = field(default_factory=list)
    events_stored: int = 0
    findings_stored: int = 0


def _ms(phase: Phase, fraction: float) -> str:
    return f"{phase.percentile(fraction):,.1f}" if phase.latencies_ms else "-"


def report(run: Run) -> str:
    assert run.usage is not None
    used = run.usage
    postgres_cpu = used.postgres_cpu
    lines = [
        f"## {run.agents:,} agents behind HAProxy — `bench/fleet.py` ({dt.date.today()})", "",
        f"{run.agents:,} agents every {run.interval:.0f} s "
        f"(target {run.agents / run.interval:,.0f} check-ins/s), {run.seconds:.0f} s, "
        f"{len(used.server_cpu)} server processes on PostgreSQL behind HAProxy; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Load average (1 min) "
        f"during the run: median {statistics.median(run.loads or [0]):.1f}, "
        f"{min(run.loads or [0]):.1f}-{max(run.loads or [0]):.1f}.", "",
        "| traffic | scheduled | sent | answered | per s | p50 ms (from schedule) "
        "| p99 ms (from schedule) | p50 ms (from send) | p99 ms (from send) | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for traffic in (run.checkins, run.batches, *run.pages.values(), *run.pages_alone.values()):
        lines.append(
            f"| {traffic.name} | {traffic.scheduled or '-'} | {traffic.sent:,} "
            f"| {traffic.answered:,} | {traffic.answered / run.seconds:,.1f} "
            f"| {_ms(traffic.from_schedule, 0.5)} | {_ms(traffic.from_schedule, 0.99)} "
            f"| {_ms(traffic.from_send, 0.5)} | {_ms(traffic.from_send, 0.99)} "
            f"| {sum(traffic.errors.values()):,} |")
    lines += ["", "Errors by kind: " + (", ".join(
        f"{traffic.name}: {kind}: {count:,}"
        for traffic in (run.checkins, run.batches, *run.pages.values())
        for kind, count in traffic.errors.most_common()) or "none") + ".",
        f"Events: {run.batches.events_sent:,} sent, {run.batches.events_acknowledged:,} "
        f"acknowledged, {run.events_stored:,} rows in `events` at the end "
        f"({'nothing lost' if run.events_stored == run.batches.events_sent else 'MISMATCH'}); "
        f"{run.findings_stored:,} findings.", "",
        "| process | CPU s | CPU (100 % = one core) | requests | CPU ms/request |",
        "| --- | ---: | ---: | ---: | ---: |"]
    for index, (cpu, requests) in enumerate(
            zip(used.server_cpu, used.server_requests, strict=True), 1):
        lines.append(f"| server {index} | {cpu:,.1f} | {100 * cpu / run.seconds:.0f} % "
                     f"| {requests:,.0f} | {1000 * cpu / requests if requests else 0:.2f} |")
    total_cpu, total_requests = sum(used.server_cpu), sum(used.server_requests)
    lines += [
        f"| all servers | {total_cpu:,.1f} | {100 * total_cpu / run.seconds:.0f} % "
        f"| {total_requests:,.0f} | {1000 * total_cpu / max(total_requests, 1):.2f} |",
        f"| HAProxy | {used.proxy_cpu:,.1f} | {100 * used.proxy_cpu / run.seconds:.0f} % | | |",
        f"| load generator | {used.generator_cpu:,.1f} "
        f"| {100 * used.generator_cpu / run.seconds:.0f} % | | |",
        f"| every postgres process (shared) | {postgres_cpu:,.1f} "
        f"| {100 * postgres_cpu / run.seconds:.0f} % | | |", ""]
    checkins = run.checkins.answered
    alone = run.pages_alone_usage
    loaded = sum(page.answered for page in run.pages_alone.values())
    page_cpu = sum(alone.server_cpu) / loaded if alone and loaded else 0.0
    if checkins:
        pages_cpu = page_cpu * sum(page.answered for page in run.pages.values())
        per_checkin = (total_cpu - pages_cpu) / checkins
        with_db = (total_cpu - pages_cpu + postgres_cpu) / checkins
        lines.append(
            f"A dashboard page alone cost the servers {1000 * page_cpu:,.0f} ms of CPU "
            f"(mean of the three); the run's pages at that cost taken out, server CPU per "
            f"check-in, event batches and health checks included: {1000 * per_checkin:.2f} ms, "
            f"so **{run.interval / per_checkin:,.0f} agents per core** at "
            f"{run.interval:.0f} s check-ins ({run.interval / with_db:,.0f} with every "
            f"postgres process's CPU counted too).")
    lines.append(f"HAProxy said {len(run.proxy_news)} lines" + (":" if run.proxy_news else ".")
                 + "".join(f"\n    {line}" for line in run.proxy_news[-30:]))
    routes: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    for counts in used.routes:
        for key, (count, seconds) in counts.items():
            routes[key] += int(count)
            spent[key] += seconds
    lines.append("Requests by route and status, and the servers' mean time answering one "
                 "(their /metrics; wall time, 200s only): " + ", ".join(
                     f"{key} {count:,}" + (f" ({1000 * spent[key] / count:,.1f} ms)"
                                           if spent[key] else "")
                     for key, count in routes.most_common() if count) + ".")
    p99 = run.checkins.from_schedule.percentile(0.99) if checkins else float("inf")
    lines.append(f"Check-in p99 from schedule {p99:,.1f} ms against the "
                 f"{TARGET_P99_MS:.0f} ms target: {'met' if p99 < TARGET_P99_MS else 'missed'}.")
    return "\n".join(lines)
