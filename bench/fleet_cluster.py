"""The server side of bench/fleet.py: several `warden server run` processes on one
PostgreSQL behind Debian's HAProxy (run from deploy/haproxy.cfg), and what they used.

Requests per process come from each process's own /metrics (asked directly, not
through HAProxy), so CPU per request is per process even though HAProxy picks
the process; CPU comes from psutil, before and after the measured window.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from server_load import running_server

from tests.e2e.lb_harness import HAProxy, haproxy_binary


@dataclass
class Cluster:
    proxy_url: str
    server_urls: list[str]
    servers: list[psutil.Process]
    proxy: psutil.Process
    proxy_log: Path


@contextmanager
def running_cluster(data_dir: Path, database_url: str, processes: int) -> Iterator[Cluster]:
    """`processes` servers sharing `data_dir` (so one signing key) and the database,
    and HAProxy in front of them; the servers believe HAProxy's X-Forwarded-For."""
    binary = haproxy_binary()
    if binary is None:
        raise SystemExit("needs Debian's HAProxy: apt-get install -y haproxy")
    settings = {"WARDEN_TRUSTED_PROXIES": "127.0.0.1"}
    with ExitStack() as stack:
        started = [stack.enter_context(running_server(data_dir, database_url, settings))
                   for _ in range(processes)]
        urls = [url for url, _ in started]
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="haproxy-")))
        proxy = HAProxy(binary, [httpx.URL(url).port or 80 for url in urls], directory)
        proxy.start()
        stack.callback(proxy.stop)
        assert proxy.process is not None
        yield Cluster(proxy.url, urls, [psutil.Process(pid) for _, pid in started],
                      psutil.Process(proxy.process.pid), proxy.log)


def proxy_news(cluster: Cluster) -> list[str]:
    """What HAProxy said on its own (servers marked down or up, say)."""
    log = cluster.proxy_log
    return log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []


@dataclass
class Usage:
    """CPU seconds of each server process, HAProxy, this process and every PostgreSQL
    process on the machine; requests each server answered (its own /metrics)."""

    server_cpu: list[float]
    server_requests: list[float]
    proxy_cpu: float
    generator_cpu: float
    postgres_by_pid: dict[int, float]
    # Per server: (requests, seconds answering them) by "METHOD route status".
    routes: list[dict[str, tuple[float, float]]] = field(default_factory=list)

    @property
    def postgres_cpu(self) -> float:
        return sum(self.postgres_by_pid.values())

    def minus(self, before: Usage) -> Usage:
        return Usage(
            [a - b for a, b in zip(self.server_cpu, before.server_cpu, strict=True)],
            [a - b for a, b in zip(self.server_requests, before.server_requests, strict=True)],
            self.proxy_cpu - before.proxy_cpu, self.generator_cpu - before.generator_cpu,
            # Backends come and go with other tests' connections: each one still there
            # counts from where it stood (from zero if new); those gone are missed.
            {pid: cpu - before.postgres_by_pid.get(pid, 0.0)
             for pid, cpu in self.postgres_by_pid.items()},
            [{key: (count - old.get(key, (0.0, 0.0))[0], spent - old.get(key, (0.0, 0.0))[1])
              for key, (count, spent) in new.items()}
             for new, old in zip(self.routes, before.routes, strict=True)])


def usage(cluster: Cluster) -> Usage:
    routes = [answered_by_route(url) for url in cluster.server_urls]
    return Usage([cpu_seconds(process) for process in cluster.servers],
                  [sum(count for count, _ in counts.values()) for counts in routes],
                  cpu_seconds(cluster.proxy), cpu_seconds(psutil.Process()),
                  postgres_cpu_seconds(), routes)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU seconds of every `postgres` process, by pid: an upper bound on this run's
    database work, since other engineers' tests use the same cluster."""
    seconds = {}
    for process in psutil.process_iter(attrs=["name", "cpu_times"], ad_value=None):
        times = process.info["cpu_times"]
        if process.info["name"] == "postgres" and times is not None:
            seconds[process.pid] = times.user + times.system
    return seconds


def answered_by_route(server_url: str) -> dict[str, tuple[float, float]]:
    """Requests a server process answered so far and the seconds it spent answering them
    (wall time, its histogram's sum), by route and status, less the scrapes themselves."""
    text = httpx.get(f"{server_url}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = f"{sample.labels.get('method')} {sample.labels.get('route')}"
            if route.endswith(" /metrics"):
                continue
            if sample.name == "warden_http_requests_total":
                key = f"{route} {sample.labels['status']}"
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name == "warden_http_request_duration_seconds_sum":
                seconds[route] = seconds.get(route, 0.0) + sample.value
    return {key: (count, seconds.get(key.rsplit(" ", 1)[0], 0.0) if key.endswith(" 200")
                  else 0.0) for key, count in counts.items()}
