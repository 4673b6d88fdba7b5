"""Strict-Transport-Security: on every answer when the server serves HTTPS itself, or when
`hsts` says a TLS-terminating proxy sits in front; never otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from server.app import create_app
from server.bootstrap import InitResult
from server.settings import ServerSettings
from tests.e2e.test_tls import make_pki
from tests.server.conftest import serve

HSTS = "max-age=31536000"
# Answers from different layers: a route, the agent door's auth, the dashboard, routing,
# and the body limit middleware.
REQUESTS = [("GET", "/healthz", 200), ("GET", "/api/v1/agent/policy", 401),
            ("GET", "/login", 200), ("GET", "/nowhere", 404),
            ("POST", "/api/v1/agent/events", 413)]
TOO_BIG = b"x" * (2 * 1024 * 1024)


def test_https_answers_carry_hsts(tmp_path: Path, settings: ServerSettings,
                                  initialized: InitResult) -> None:
    pki = make_pki(tmp_path / "pki", "hsts")
    tls = settings.model_copy(update={"tls_cert": pki.server_cert, "tls_key": pki.server_key})
    with serve(create_app(tls), ssl_certfile=str(pki.server_cert),
               ssl_keyfile=str(pki.server_key)) as port:
        for method, path, status in REQUESTS:
            response = requests.request(
                method, f"https://127.0.0.1:{port}{path}", verify=str(pki.ca_cert),
                timeout=10, data=TOO_BIG if method == "POST" else None,
                headers={"Content-Type": "application/json"})
            assert response.status_code == status, (path, response.text)
            assert response.headers.get("Strict-Transport-Security") == HSTS, path


@pytest.mark.parametrize("hsts", [False, True])
def test_plain_http_carries_hsts_only_when_configured_behind_a_proxy(
    settings: ServerSettings, initialized: InitResult, hsts: bool
) -> None:
    app = create_app(settings.model_copy(update={"hsts": hsts}))
    with TestClient(app) as client:
        for method, path, status in REQUESTS:
            response = client.request(method, path,
                                      content=TOO_BIG if method == "POST" else None,
                                      headers={"Content-Type": "application/json"})
            assert response.status_code == status, (path, response.text)
            assert response.headers.get("Strict-Transport-Security") == (
                HSTS if hsts else None), path


def test_the_setting_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not ServerSettings(data_dir=tmp_path).sends_hsts
    monkeypatch.setenv("WARDEN_HSTS", "1")
    assert ServerSettings(data_dir=tmp_path).sends_hsts
    monkeypatch.delenv("WARDEN_HSTS")
    cert = tmp_path / "cert.pem"
    assert ServerSettings(data_dir=tmp_path, tls_cert=cert, tls_key=cert).sends_hsts
