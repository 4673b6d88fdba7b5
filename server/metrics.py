"""Prometheus metrics for one server app: requests, ingestion, alerts, and state gauges.

Each `Metrics` owns its own `CollectorRegistry`, so several apps in one process
(tests, mostly) never collide in prometheus_client's global registry. Counts that
live in the database (open findings, agents by state) are not kept in memory:
a collector asks `collect_state` for them at scrape time, so they are never stale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypedDict

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.routing import Mount

log = logging.getLogger(__name__)

ASGIApp = Callable[..., Any]
UNMATCHED = "unmatched"
# Agent check-ins and event uploads sit well under a second; keep resolution there.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsState(TypedDict, total=False):
    """What `collect_state` answers: current counts read from the database."""

    open_findings: Mapping[str, int]  # by app id
    agents: Mapping[str, int]  # by state: active, silent, revoked


class Metrics:
    def __init__(self, collect_state: Callable[[], MetricsState] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "warden_http_requests", "HTTP requests answered, by route template and status",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "warden_http_request_duration_seconds", "Time to answer an HTTP request",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events = Counter(
            "warden_events_ingested", "Agent events stored, by type", ["type"],
            registry=self.registry)
        self.duplicates = Counter(
            "warden_events_duplicate", "Agent events received again and not stored twice",
            registry=self.registry)
        self.alerts = Counter(
            "warden_alerts", "Alert deliveries by destination and outcome "
            "(delivered, failed, dropped)", ["destination", "outcome"], registry=self.registry)
        self.siem_records = Counter(
            "warden_siem_records", "Records for SIEM destinations by destination and outcome "
            "(delivered, failed, dropped)", ["destination", "outcome"], registry=self.registry)
        self._state = _StateCollector(collect_state)
        self.registry.register(self._state)

    def set_state_collector(self, collect_state: Callable[[], MetricsState]) -> None:
        """Install the database read behind the gauges (the core does it once it has a store)."""
        self._state.collect_state = collect_state

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def events_ingested(self, event_type: str, count: int = 1) -> None:
        self.events.labels(event_type).inc(count)

    def duplicate_events(self, count: int = 1) -> None:
        self.duplicates.inc(count)

    def alert_outcome(self, destination: str, outcome: str) -> None:
        """Matches AlertDispatcher's `on_outcome` hook."""
        self.alerts.labels(destination, outcome).inc()

    def siem_outcome(self, destination: str, outcome: str, count: int) -> None:
        """Matches server.siem.outbox's `on_outcome` hook."""
        self.siem_records.labels(destination, outcome).inc(count)

    def render(self) -> tuple[bytes, str]:
        """The body and content type for a /metrics response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def middleware(self, app: ASGIApp) -> MetricsMiddleware:
        return MetricsMiddleware(app, self)


class _StateCollector(Collector):
    def __init__(self, collect_state: Callable[[], MetricsState] | None) -> None:
        self.collect_state = collect_state

    def describe(self) -> list[Metric]:
        # Describing without collecting keeps registration from calling the database.
        return [GaugeMetricFamily("warden_open_findings", "Open findings, by app"),
                GaugeMetricFamily("warden_agents", "Agents by state (active, silent, revoked)"),
                GaugeMetricFamily("warden_state_up", "1 if the state read for these gauges "
                                  "worked on this scrape")]

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("warden_state_up", "1 if the state read for these gauges "
                               "worked on this scrape")
        if self.collect_state is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            state = self.collect_state()
        except Exception:
            # A failing database must not take the request counters down with it.
            log.exception("reading state for /metrics failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        findings = GaugeMetricFamily("warden_open_findings", "Open findings, by app",
                                     labels=["app"])
        for app, count in sorted(state.get("open_findings", {}).items()):
            findings.add_metric([app], count)
        yield findings
        agents = GaugeMetricFamily("warden_agents", "Agents by state (active, silent, revoked)",
                                   labels=["state"])
        for agent_state, count in sorted(state.get("agents", {}).items()):
            agents.add_metric([agent_state], count)
        yield agents


class MetricsMiddleware:
    """ASGI middleware counting requests by the matched route's template.

    Labels use the route's path template (`/api/v1/findings/{finding_id}`), never
    the raw path, so ids in URLs cannot blow up the number of series; a request
    no route matched is labelled "unmatched".
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # what the client sees if the app raises before answering

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe_request(scope["method"], route_template(scope, root_path),
                                         status, time.perf_counter() - started)


def route_template(scope: Mapping[str, Any], outer_root_path: str = "") -> str:
    """The path template of the route the router matched (Starlette records it in the scope)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    if isinstance(route, Mount):
        # A mount nothing inside matched (or a plain ASGI app such as static files):
        # its own template, `/static/{path}`, already starts at the top.
        return template
    # Inside a mounted app the route is relative; the mount's prefix is in root_path.
    root_path: str = scope.get("root_path", "")
    return root_path[len(outer_root_path):] + template
