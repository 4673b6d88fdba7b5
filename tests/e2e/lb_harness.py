"""Debian's HAProxy on loopback, run from the shipped deploy/haproxy.cfg, in front of
several `warden server run` processes on one PostgreSQL database.

Only the lines the file marks "ADAPT" change: the frontend binds a loopback port
without TLS and the backend lists the test's servers. Every other line (health
checks, retries, client address, error answers) is the shipped configuration.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.agent.conftest import wait_for
from tests.e2e.conftest import free_port

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
STARTUP = 30.0


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


def loopback_config(port: int, server_ports: list[int]) -> str:
    """The shipped configuration, bound to 127.0.0.1:`port`, in front of the servers
    listening on 127.0.0.1 at `server_ports`."""
    text = CONFIG.read_text(encoding="utf-8")
    text, binds = re.subn(r"(?m)^    bind .*$", f"    bind 127.0.0.1:{port}", text)
    assert binds == 1, "deploy/haproxy.cfg should have one bind line"
    text = re.sub(r"(?m)^    server warden\d+ .*\n", "", text)
    lines = "".join(f"    server warden{index} 127.0.0.1:{server_port}\n"
                    for index, server_port in enumerate(server_ports, 1))
    return text.rstrip("\n") + "\n" + lines


class HAProxy:
    """`haproxy -db` (foreground) as a child process on a loopback port."""

    def __init__(self, binary: str, server_ports: list[int], directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "haproxy.cfg"
        self.config.write_text(loopback_config(self.port, server_ports), encoding="utf-8")
        self.log = directory / "haproxy.log"
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        checked = subprocess.run([self.binary, "-c", "-q", "-f", str(self.config)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-db", "-f", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, STARTUP, f"HAProxy on {self.url} ({self.log})")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"HAProxy exited: {self.log.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


def post_from(source: str, url: str, path: str, body: dict[str, Any],
              headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """POST JSON from the loopback address `source` (127.0.0.0/8 is all this machine's),
    as a client on another machine would; the status and headers (names lowercased)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15,
                                            source_address=(source, 0))
    try:
        connection.request("POST", path, body=json.dumps(body),
                           headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()
