"""TLS end to end: `warden server run --tls-cert/--tls-key` and an agent pinned to a CA.

A throwaway CA and a server certificate for 127.0.0.1/localhost are made per
test with `cryptography`; the server and the agents are real processes on
loopback, and every HTTPS request in the test verifies against that CA too.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.cli import main as warden_main
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import (
    BIN,
    STARTUP,
    AgentProcess,
    WardenServer,
    agent_factory,
    free_port,
)

SYNC = 45.0  # enrollment + a check-in every 5 s (+ jitter) + upload


# -- a throwaway PKI -----------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_cert: Path  # what an agent pins (WARDEN_AGENT_CA_BUNDLE)
    server_cert: Path
    server_key: Path


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path, label: str) -> Pki:
    """A CA and a server certificate it signed, valid for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"Warden test CA {label}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost")).issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pki(
        ca_cert=_write_pem(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        server_cert=_write_pem(directory / "server.pem",
                               server.public_bytes(serialization.Encoding.PEM)),
        server_key=_write_pem(directory / "server-key.pem", server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())),
    )


# -- a server serving HTTPS ----------------------------------------------------


class TlsWardenServer(WardenServer):
    """The e2e harness's server, started with --tls-cert/--tls-key and reached over HTTPS."""

    def __init__(self, data_dir: Path, log: Path, pki: Pki, host: str = "127.0.0.1") -> None:
        super().__init__(data_dir, log)
        self.pki = pki
        self.host = host
        self.url = f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "warden"), "server", "run", "--data-dir", str(self.data_dir),
                 "--host", self.host, "--port", str(self.port),
                 "--tls-cert", str(self.pki.server_cert), "--tls-key", str(self.pki.server_key)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_for(self._healthy, STARTUP, f"the server on {self.url} ({self.log})")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the server exited: {self.log.read_text()[-3000:]}")
        try:
            response = requests.get(f"{self.url}/healthz", timeout=2,
                                    verify=str(self.pki.ca_cert))
        except requests.ConnectionError:
            return False
        return response.status_code == 200

    def api(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.url}/api/v1/{path}", timeout=10,
                                    headers={"Authorization": f"Bearer {self.admin_token}"},
                                    verify=str(self.pki.ca_cert), **kwargs)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", "trusted")


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[TlsWardenServer]:
    server = TlsWardenServer(tmp_path / "server", tmp_path / "server.log", pki)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_agents(tmp_path: Path, tls_server: TlsWardenServer) -> Iterator[Any]:
    with agent_factory(tmp_path, tls_server) as make:
        yield lambda ca_bundle: make(ca_bundle=str(ca_bundle))


def _telegram_finding(server: WardenServer, pid: int) -> dict[str, Any] | None:
    for item in server.findings(app="telegram", sensor="process", status="open"):
        if item["evidence"].get("pid") == pid:
            return item
    return None


# -- the tests -----------------------------------------------------------------


@pytest.mark.slow
def test_an_agent_pinned_to_the_ca_enrolls_and_reports_over_https(
    tls_server: TlsWardenServer, tls_agents: Any, fake: FakeProcesses, pki: Pki
) -> None:
    agent: AgentProcess = tls_agents(pki.ca_cert)
    assert agent.env["WARDEN_AGENT_SERVER_URL"].startswith("https://")
    agent.start()
    wait_for(lambda: agent.status().get("enrolled"), SYNC, "enrollment over HTTPS")
    telegram = fake.start("telegram-desktop")
    finding = wait_for(lambda: _telegram_finding(tls_server, telegram.pid), SYNC,
                       "the agent's finding in the server API")
    assert finding["verdict"] == "deny"
    assert finding["evidence"]["exe"].endswith("/telegram-desktop")
    [listed] = tls_server.api("agents")["items"]
    assert listed["id"] == agent.status()["agent_id"]
    # The port speaks TLS only: a plain-HTTP request gets no answer at all.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{tls_server.port}/healthz", timeout=5)


@pytest.mark.slow
def test_an_agent_pinned_to_another_ca_refuses_the_server(
    tls_server: TlsWardenServer, tls_agents: Any, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other-pki", "other")
    agent: AgentProcess = tls_agents(other.ca_cert)
    agent.start()
    status = wait_for(lambda: (s := agent.status()).get("last_error") and s, SYNC,
                      "the agent reporting why it cannot reach the server")
    assert "TLS verification" in status["last_error"], status
    assert "CERTIFICATE_VERIFY_FAILED" in status["last_error"], status
    assert status["enrolled"] is False
    assert not (agent.state_dir / "identity.json").exists()
    assert agent.process is not None and agent.process.poll() is None, "the agent keeps running"
    assert tls_server.api("agents")["items"] == []
    # The secret never reached the server: it is still unused.
    [secret] = tls_server.api("secrets")["items"]
    assert secret["uses"] == 0


def _without_warden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WARDEN_") and name != "WARDEN_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


def test_plain_http_on_all_interfaces_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _without_warden_env(monkeypatch)
    code = warden_main(["server", "run", "--data-dir", str(tmp_path / "data"),
                        "--host", "0.0.0.0", "--port", str(free_port())])
    assert code == 2
    error = capsys.readouterr().err
    assert "refusing to serve plain HTTP on '0.0.0.0'" in error
    assert "--tls-cert" in error
    # Refused before anything was touched.
    assert not (tmp_path / "data").exists()


def test_tls_on_all_interfaces_is_accepted_and_stops_promptly(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_warden_env(monkeypatch)
    server = TlsWardenServer(tmp_path / "server", tmp_path / "server.log", pki, host="0.0.0.0")
    server.start()
    ca = str(pki.ca_cert)  # per request: a session's `verify` loses to $REQUESTS_CA_BUNDLE
    try:
        # An agent-like client keeping an idle keep-alive connection open, as a fleet does.
        with requests.Session() as session:
            health = session.get(f"{server.url}/healthz", timeout=5, verify=ca)
            assert health.json() == {"status": "ok"}
            # The certificate names localhost too, and the server answers on that name.
            health = session.get(f"https://localhost:{server.port}/healthz", timeout=5,
                                 verify=ca)
            assert health.status_code == 200
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            # Over TLS, asyncio would wait 30 s for the idle client's close_notify; the
            # server bounds its graceful stop well below that. uvicorn ends by re-raising
            # the SIGTERM it handled, so -15 is a clean stop too.
            assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
        server.stop()
    assert "Application shutdown complete" in server.log.read_text()
