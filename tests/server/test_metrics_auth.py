"""`/metrics` behind `metrics_token` (WARDEN_METRICS_TOKEN), over real HTTP on loopback.

Set, a scrape must send `Authorization: Bearer <token>`; anything else is the API's
JSON 401 with `WWW-Authenticate: Bearer`. Unset, `/metrics` stays open, and a server
listening beyond loopback says so in its startup log.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from server.app import create_app
from server.bootstrap import InitResult
from server.settings import ServerSettings
from tests.server.admin_support import bearer
from tests.server.conftest import serve

APP_LOGGER = "server.app"


@pytest.fixture
def metrics_token() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def guarded_server(settings: ServerSettings, initialized: InitResult,
                   metrics_token: str) -> Iterator[str]:
    """The server on uvicorn with a metrics token (given with the newline a file has)."""
    guarded = ServerSettings(data_dir=settings.data_dir, database_url=settings.database_url,
                             metrics_token=SecretStr(metrics_token + "\n"))
    with serve(create_app(guarded)) as port:
        yield f"http://127.0.0.1:{port}"


def test_a_scrape_needs_the_metrics_token(
    guarded_server: str, metrics_token: str, admin_token: str, enroll_secret: str,
) -> None:
    with httpx.Client(base_url=guarded_server, timeout=30) as http:
        wrong = {"no header": {}, "another token": bearer(secrets.token_hex(32)),
                 "the admin API token": bearer(admin_token),
                 "the enrollment secret": bearer(enroll_secret),
                 "a prefix of the token": bearer(metrics_token[:-1]),
                 "basic auth": {"Authorization": f"Basic {metrics_token}"}}
        for name, headers in wrong.items():
            response = http.get("/metrics", headers=headers)
            assert response.status_code == 401, name
            assert response.headers["www-authenticate"] == "Bearer", name
            error = response.json()["error"]
            assert error["code"] == "unauthorized" and error["message"], name
            assert "warden_agents" not in response.text, name

        scraped = http.get("/metrics", headers={"Authorization": f"bearer {metrics_token}"})
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=")
        assert 'warden_agents{state="active"}' in scraped.text
        # The refused scrapes were counted like any other request.
        assert ('warden_http_requests_total{method="GET",route="/metrics",status="401"} 6.0'
                in scraped.text)
        # The rest of the server does not take the metrics token.
        assert http.get("/api/v1/agents", headers=bearer(metrics_token)).status_code == 401
        assert http.get("/healthz").status_code == 200


def test_without_a_token_metrics_stay_open(live_server: str) -> None:
    response = httpx.get(f"{live_server}/metrics", timeout=30)
    assert response.status_code == 200
    assert "# TYPE warden_agents gauge" in response.text


@pytest.mark.parametrize("value", ["", "short", " " * 20, "x" * 15])
def test_a_weak_metrics_token_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="metrics_token must be at least 16 characters"):
        ServerSettings(data_dir=tmp_path, metrics_token=SecretStr(value))


def test_the_token_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metrics_token: str,
) -> None:
    monkeypatch.setenv("WARDEN_METRICS_TOKEN", metrics_token)
    settings = ServerSettings(data_dir=tmp_path)
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == metrics_token
    assert metrics_token not in repr(settings)


@pytest.mark.parametrize(("host", "with_token", "warns"), [
    ("0.0.0.0", False, True),  # open to the network: say so
    ("0.0.0.0", True, False),
    ("127.0.0.1", False, False),  # loopback: only this machine can scrape
])
def test_open_metrics_beyond_loopback_are_warned_about_at_startup(
    settings: ServerSettings, initialized: InitResult, caplog: pytest.LogCaptureFixture,
    metrics_token: str, host: str, with_token: bool, warns: bool,
) -> None:
    configured = ServerSettings(data_dir=settings.data_dir, database_url=settings.database_url,
                                host=host, allow_insecure=True,
                                metrics_token=SecretStr(metrics_token) if with_token else None)
    app = create_app(configured)
    with caplog.at_level(logging.WARNING, logger=APP_LOGGER), TestClient(app):
        pass
    warnings = [record.getMessage() for record in caplog.records
                if record.name == APP_LOGGER and "/metrics" in record.getMessage()]
    if warns:
        assert warnings == [
            "/metrics needs no token and the server listens on 0.0.0.0: whoever reaches it "
            "reads open findings by app and agents by state. Set WARDEN_METRICS_TOKEN, or "
            "restrict /metrics at the proxy or firewall"]
    else:
        assert warnings == []
