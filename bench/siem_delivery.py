"""What SIEM delivery costs, and how fast it drains into a real syslog daemon and HEC.

Prints, as a markdown table:
- rendering one typical process finding as CEF, as ECS JSON and as a HEC event;
- `publish` (what ingest pays per record) while the destination is down;
- records per second delivered into Debian's rsyslogd over TCP (octet counting) and
  over UDP, counted in the file rsyslog writes, and into the HEC stand-in of the tests;
- POST /api/v1/agent/events (100 new findings a batch, SQLite) with no SIEM and with
  three destinations (CEF/TCP, ECS/UDP, HEC) configured, all of them down.

Run: PYTHONPATH=. .venv/bin/python bench/siem_delivery.py
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from server.app import create_app
from server.bootstrap import initialize
from server.settings import ServerSettings
from server.siem.cef import cef_line
from server.siem.destinations import SiemDestination
from server.siem.ecs import Observer, ecs_document, ecs_json
from server.siem.publisher import SiemPublisher
from server.siem.records import SiemRecord, finding_record
from server.siem.senders import hec_event
from tests.server.siem_support import HecStandIn, free_port, serve_hec, start_rsyslog

NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
OBSERVER = Observer("warden-1", "1.0")
DELIVER = 20_000


def record(n: int) -> SiemRecord:
    finding = {"id": n, "agent_id": str(uuid.uuid4()), "host": f"pc-{n % 500}", "group": "hq",
               "app": "telegram", "app_name": "Telegram", "sensor": "process",
               "verdict": "deny", "action": "notify", "key": f"process:{n}", "count": 1,
               "alternative": "signal", "message": "Telegram is not allowed; use Signal.",
               "first_seen": NOW.isoformat(), "last_seen": NOW.isoformat(),
               "evidence": {"pid": 4000 + n, "ppid": 1, "name": "telegram-desktop",
                            "exe": "/opt/Telegram/Telegram", "username": "alice",
                            "cmdline": ["/opt/Telegram/Telegram", "-workdir",
                                        "/home/alice/.local/share/TelegramDesktop"]}}
    return finding_record("finding_opened", finding, str(uuid.uuid4()), NOW)


def per_call_us(call: Callable[[], object], count: int = 20_000) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1e6


def rendering() -> list[tuple[str, str]]:
    sample = record(1)

    def hec() -> str:
        return hec_event(sample, ecs_document(sample, OBSERVER), None, "warden", "_json")

    return [
        ("render CEF line", f"{per_call_us(lambda: cef_line(sample, '1.0')):.1f} µs"),
        ("render ECS JSON", f"{per_call_us(lambda: ecs_json(sample, OBSERVER)):.1f} µs"),
        ("render HEC event", f"{per_call_us(hec):.1f} µs"),
    ]


def publish_while_down() -> tuple[str, str]:
    port = free_port(socket.SOCK_STREAM)  # nobody listens
    destination = SiemDestination(name="down", format="cef",
                                  address=f"tcp://127.0.0.1:{port}", queue_size=1_000_000)
    publisher = SiemPublisher([destination], "1.0")
    publisher.start()
    records = [record(n) for n in range(DELIVER)]
    start = time.perf_counter()
    for item in records:
        publisher.publish(item)
    cost = (time.perf_counter() - start) / len(records) * 1e6
    publisher.stop(5)
    return "`publish` per record, destination down", f"{cost:.1f} µs"


def drain(destination: SiemDestination, arrived: Callable[[], int]) -> tuple[float, int]:
    """Records per second until the last one arrived, and how many arrived."""
    publisher = SiemPublisher([destination], "1.0")
    publisher.start()
    records = [record(n) for n in range(DELIVER)]
    start = time.perf_counter()
    for item in records:
        publisher.publish(item)
    got, last_growth = 0, start
    # Until all arrived, or nothing more for 3 s (UDP may lose some: it has no retry).
    while got < DELIVER and time.perf_counter() - last_growth < 3:
        time.sleep(0.05)
        now_got = arrived()
        if now_got > got:
            got, last_growth = now_got, time.perf_counter()
    publisher.stop(10)
    return got / (last_growth - start), got


def delivery(folder: Path) -> list[tuple[str, str]]:
    rows = []
    daemon = start_rsyslog(folder / "rsyslog")
    rsyslog = next(daemon)
    try:
        def lines() -> int:
            with rsyslog.out.open("rb") as file:
                return sum(1 for _ in file) - 1  # less the readiness probe
        for transport, port in (("tcp", rsyslog.tcp_port), ("udp", rsyslog.udp_port)):
            before = lines()
            rate, got = drain(SiemDestination(name=transport, format="cef",
                                              address=f"{transport}://127.0.0.1:{port}",
                                              queue_size=DELIVER),
                              lambda before=before: lines() - before)  # type: ignore[misc]
            rows.append((f"CEF into rsyslogd over {transport.upper()}",
                         f"{rate:,.0f} records/s, {got:,} of {DELIVER:,} arrived"))
    finally:
        daemon.close()
    hec = HecStandIn(token="t")
    server, thread = serve_hec(hec)
    try:
        rate, got = drain(SiemDestination(name="hec", format="hec", address=hec.url,
                                          token="t", queue_size=DELIVER),
                          lambda: len(hec.events))
        rows.append(("ECS into the HEC stand-in (batches of 100)",
                     f"{rate:,.0f} records/s, {got:,} of {DELIVER:,} arrived"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    return rows


def ingest(folder: Path, destinations: list[dict[str, Any]]) -> float:
    data_dir = folder / str(uuid.uuid4())
    settings = ServerSettings(data_dir=data_dir, siem_destinations=destinations)
    secret = initialize(settings).enroll_secret
    assert secret is not None
    times = []
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/v1/agent/enroll", headers={"Authorization": f"Bearer {secret}"},
                             json={"hostname": "pc-1", "machine_id": uuid.uuid4().hex,
                                   "os": "linux", "os_version": "12", "arch": "x86_64",
                                   "agent_version": "0.1.0", "user": "alice"})
        headers = {"Authorization": f"Bearer {answer.json()['agent_token']}"}
        for batch in range(30):
            events = [{"id": str(uuid.uuid4()), "type": "finding_opened",
                       "time": NOW.isoformat(),
                       "finding": {"key": f"{batch}:{n}", "app": "telegram", "verdict": "deny",
                                   "sensor": "process", "action": "notify",
                                   "evidence": {"pid": n, "name": "telegram-desktop"}}}
                      for n in range(100)]
            start = time.perf_counter()
            assert client.post("/api/v1/agent/events", json={"events": events},
                               headers=headers).status_code == 200
            times.append(time.perf_counter() - start)
    return statistics.median(times[5:]) * 1000


def main() -> None:
    # The outages below are on purpose: their warnings are not the figures.
    logging.getLogger("server.siem").setLevel(logging.ERROR)
    rows = rendering()
    rows.append(publish_while_down())
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        rows += delivery(folder)
        down_tcp, down_udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        down = [{"name": "cef", "format": "cef", "address": f"tcp://127.0.0.1:{down_tcp}"},
                {"name": "ecs", "format": "ecs", "address": f"udp://127.0.0.1:{down_udp}"},
                {"name": "hec", "format": "hec", "address": f"http://127.0.0.1:{down_tcp}",
                 "token": "t"}]
        rows.append(("POST events, 100 new findings, no SIEM (median)",
                      f"{ingest(folder, []):.1f} ms"))
        rows.append(("same, three SIEM destinations, all down (median)",
                      f"{ingest(folder, down):.1f} ms"))
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| measure | figure |\n| --- | --- |")
    for name, figure in rows:
        print(f"| {name} | {figure} |")


if __name__ == "__main__":
    main()
