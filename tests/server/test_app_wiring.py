"""create_app wires the parts together: alerts fire after ingestion, /metrics counts it."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.bootstrap import InitResult
from server.settings import ServerSettings

EVENTS = "/api/v1/agent/events"


class WebhookReceiver:
    """A real HTTP server on loopback that records the JSON bodies posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                self.send_response(204)
                self.end_headers()
                with receiver.arrived:
                    receiver.bodies.append(body)
                    receiver.arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout), self.bodies
            return list(self.bodies)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
    receiver.thread.join(timeout=10)


def opened(app: str, verdict: str, key: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "finding_opened",
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "finding": {"key": key, "app": app, "verdict": verdict, "sensor": "process",
                        "action": "notify", "evidence": {"pid": 7, "name": "telegram-desktop"},
                        "alternative": "signal" if verdict == "deny" else None}}


def test_a_new_deny_finding_reaches_the_webhook(
    settings: ServerSettings, initialized: InitResult, receiver: WebhookReceiver,
    host_facts: Callable[..., dict[str, Any]],
) -> None:
    app = create_app(settings.model_copy(update={"alert_webhook_url": receiver.url}))
    with TestClient(app) as client:
        enrolled = client.post("/api/v1/agent/enroll", json=host_facts(hostname="pc-7"),
                               headers={"Authorization": f"Bearer {initialized.enroll_secret}"})
        headers = {"Authorization": f"Bearer {enrolled.json()['agent_token']}"}
        batch = [opened("telegram", "deny", "t"), opened("signal", "allow", "s")]
        assert client.post(EVENTS, json={"events": batch}, headers=headers).status_code == 200
        bodies = receiver.wait_for(1)
    # The lifespan stopped the dispatcher; exactly one alert, for the deny finding.
    assert len(receiver.bodies) == 1
    assert "Telegram" in bodies[0]["text"] and "pc-7" in bodies[0]["text"]


def test_metrics_count_ingestion_and_read_state_at_scrape(
    client: TestClient, enrolled_agent: Any
) -> None:
    batch = [opened("telegram", "deny", "t1"), opened("telegram", "deny", "t2")]
    client.post(EVENTS, json={"events": batch}, headers=enrolled_agent.headers)
    client.post(EVENTS, json={"events": batch}, headers=enrolled_agent.headers)
    text = client.get("/metrics").text
    assert 'warden_events_ingested_total{type="finding_opened"} 2.0' in text
    assert "warden_events_duplicate_total 2.0" in text
    assert 'warden_open_findings{app="telegram"} 2.0' in text
    assert 'warden_agents{state="active"} 1.0' in text
    assert 'route="/api/v1/agent/events"' in text
