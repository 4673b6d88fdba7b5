"""Metrics: per-route-template request counts and latency, ingestion, alerts, state gauges.

Requests go through httpx's in-process ASGI transport rather than Starlette's
TestClient, which warns (an error here) unless the separate httpx2 package is installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from server.metrics import Metrics, MetricsMiddleware, MetricsState


def build_app(metrics: Metrics) -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/findings/{finding_id}")
    def finding(finding_id: str) -> dict[str, str]:
        return {"id": finding_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("handler failed")

    @app.get("/metrics")
    def scrape() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    sub = FastAPI()

    @sub.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.mount("/sub", sub)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def samples(metrics: Metrics) -> list[Sample]:
    body, _ = metrics.render()
    return [sample for family in text_string_to_metric_families(body.decode())
            for sample in family.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    for sample in samples(metrics):
        if sample.name == name and sample.labels == labels:
            return sample.value
    return None


def call(app: Any, *requests: tuple[str, str]) -> list[httpx.Response]:
    """Send (method, path) requests in order to the ASGI app; a handler error is a 500."""

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.request(method, path) for method, path in requests]

    return asyncio.run(send_all())


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def app(metrics: Metrics) -> FastAPI:
    return build_app(metrics)


def test_requests_are_labelled_by_route_template(metrics: Metrics, app: FastAPI) -> None:
    responses = call(app, *[("GET", f"/api/v1/findings/{id_}") for id_ in ("a1", "b2", "c3")],
                     ("GET", "/no/such/page"), ("POST", "/api/v1/findings/a1"), ("GET", "/boom"),
                     ("GET", "/sub/items/7"))
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 405, 500, 200]

    count = "warden_http_requests_total"
    route = "/api/v1/findings/{finding_id}"
    assert value(metrics, count, method="GET", route=route, status="200") == 3
    assert value(metrics, count, method="POST", route=route, status="405") == 1
    assert value(metrics, count, method="GET", route="unmatched", status="404") == 1
    assert value(metrics, count, method="GET", route="/boom", status="500") == 1
    assert value(metrics, count, method="GET", route="/sub/items/{item_id}", status="200") == 1
    # Raw paths never become labels.
    assert not [s for s in samples(metrics) if "a1" in s.labels.get("route", "")]


def test_latency_histogram(metrics: Metrics, app: FastAPI) -> None:
    call(app, ("GET", "/api/v1/findings/x"), ("GET", "/api/v1/findings/y"))
    name = "warden_http_request_duration_seconds"
    labels = {"method": "GET", "route": "/api/v1/findings/{finding_id}"}
    assert value(metrics, f"{name}_count", **labels) == 2
    assert value(metrics, f"{name}_bucket", **labels, le="+Inf") == 2
    total = value(metrics, f"{name}_sum", **labels)
    assert total is not None and total > 0


def test_the_metrics_endpoint_serves_prometheus_text(app: FastAPI) -> None:
    _, response = call(app, ("GET", "/api/v1/findings/x"), ("GET", "/metrics"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    assert ('warden_http_requests_total{method="GET",route="/api/v1/findings/{finding_id}",'
            'status="200"} 1.0') in text
    assert "# TYPE warden_http_request_duration_seconds histogram" in text


def test_ingestion_and_alert_counters(metrics: Metrics) -> None:
    metrics.events_ingested("finding_opened", 3)
    metrics.events_ingested("action")
    metrics.duplicate_events(2)
    metrics.alert_outcome("webhook", "delivered")
    metrics.alert_outcome("syslog", "failed")
    assert value(metrics, "warden_events_ingested_total", type="finding_opened") == 3
    assert value(metrics, "warden_events_ingested_total", type="action") == 1
    assert value(metrics, "warden_events_duplicate_total") == 2
    assert value(metrics, "warden_alerts_total", destination="webhook", outcome="delivered") == 1
    assert value(metrics, "warden_alerts_total", destination="syslog", outcome="failed") == 1


def test_state_gauges_are_read_at_scrape_time() -> None:
    state: MetricsState = {"open_findings": {"telegram": 3},
                           "agents": {"active": 2, "silent": 1, "revoked": 0}}
    metrics = Metrics(lambda: state)
    assert value(metrics, "warden_open_findings", app="telegram") == 3
    assert value(metrics, "warden_agents", state="active") == 2
    assert value(metrics, "warden_agents", state="revoked") == 0
    assert value(metrics, "warden_state_up") == 1
    state["open_findings"] = {"telegram": 1, "whatsapp": 4}
    assert value(metrics, "warden_open_findings", app="telegram") == 1
    assert value(metrics, "warden_open_findings", app="whatsapp") == 4


def test_state_collector_installed_later_and_failures_do_not_break_scrapes(
    metrics: Metrics,
) -> None:
    assert value(metrics, "warden_state_up") == 0

    def broken() -> MetricsState:
        raise RuntimeError("database is down")

    metrics.set_state_collector(broken)
    metrics.events_ingested("finding_opened")
    assert value(metrics, "warden_state_up") == 0
    assert value(metrics, "warden_events_ingested_total", type="finding_opened") == 1
    metrics.set_state_collector(lambda: {"agents": {"silent": 5}})
    assert value(metrics, "warden_agents", state="silent") == 5
    assert value(metrics, "warden_state_up") == 1


def test_two_instances_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.events_ingested("action")
    assert value(first, "warden_events_ingested_total", type="action") == 1
    assert value(second, "warden_events_ingested_total", type="action") is None


def test_wrapping_an_app_directly(metrics: Metrics) -> None:
    app = FastAPI()

    @app.get("/api/v1/agents")
    def agents() -> dict[str, list[str]]:
        return {"items": []}

    [response] = call(metrics.middleware(app), ("GET", "/api/v1/agents"))
    assert response.status_code == 200
    assert value(metrics, "warden_http_requests_total", method="GET", route="/api/v1/agents",
                 status="200") == 1
