"""The network sensor with real loopback TCP connections."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.scanning.findings import FindingTracker
from agent.sensors.network import NetworkSensor, PsutilTable, RawConnection
from agent.sensors.procnet import ProcNetTable
from policies.engine import Engine
from policies.observations import ConnectionObservation

LINUX = sys.platform.startswith("linux")

POLICY = """
name: loopback
apps:
  - id: loopchat
    name: LoopChat
    signatures:
      network:
        cidrs: [127.0.0.0/8]
        ports: [{port}]
rules:
  - app: loopchat
    verdict: deny
    action: notify
"""


@contextmanager
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def connection(server: socket.socket) -> Iterator[socket.socket]:
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        yield client
    finally:
        client.close()
        accepted.close()


def _port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def test_connection_is_detected_with_its_process_and_resolves_when_closed(
    make_engine: Any, wait: Any
) -> None:
    tracker = FindingTracker()
    sensor = NetworkSensor(min_interval=0.0)
    with listener() as server:
        engine: Engine = make_engine(POLICY.format(port=_port(server)))
        with connection(server) as client:
            def opened() -> list[dict[str, Any]]:
                return tracker.replace("network", engine.evaluate_all(sensor.scan() or []))

            (event,) = wait(opened, what="the loopback connection to be reported")
            assert event["event"] == "opened"
            assert event["app"] == "loopchat"
            assert event["sensor"] == "network"
            assert event["pid"] == os.getpid()
            evidence = event["evidence"]
            assert evidence["remote_address"] == f"127.0.0.1:{_port(server)}"
            assert evidence["local_address"] == f"127.0.0.1:{_port(client)}"
            assert evidence["process_name"] == psutil.Process().name()
            assert event["matched"] == "network.cidrs: 127.0.0.0/8"

        def resolved() -> list[dict[str, Any]]:
            return tracker.replace("network", engine.evaluate_all(sensor.scan() or []))

        (event,) = wait(resolved, what="the closed connection to resolve")
        assert event["event"] == "resolved"
        assert tracker.open_findings() == []


def test_other_ports_on_the_same_network_are_not_flagged(make_engine: Any) -> None:
    with listener() as watched, listener() as other:
        engine: Engine = make_engine(POLICY.format(port=_port(watched)))
        with connection(other) as client:
            observations = NetworkSensor().scan()
            assert observations is not None
            # This process's connection: workers share the network, so another worker's
            # socket may have the same local port (in another PID namespace: another owner).
            mine = [o for o in observations
                    if o.local_port == _port(client) and o.pid == os.getpid()]
            assert [o.remote_port for o in mine] == [_port(other)]  # seen...
            assert engine.evaluate_all(mine) == []  # ...and not flagged


def test_listening_sockets_are_not_connections() -> None:
    with listener() as server:
        observations = NetworkSensor().scan() or []
        assert all(o.local_port != _port(server) or o.remote_port for o in observations)
        assert not [o for o in observations if o.local_port == _port(server)]


class Table:
    """A connection table with nothing in it, or one that says no."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse

    def connections(self) -> list[RawConnection]:
        if self.refuse:
            raise psutil.AccessDenied()
        return []

    def owners(self, inodes: set[int]) -> dict[int, int]:
        return {}


def test_rate_limit() -> None:
    now = [100.0]
    sensor = NetworkSensor(min_interval=10.0, clock=lambda: now[0], table=Table())
    assert sensor.due()
    assert sensor.scan() == []
    assert not sensor.due()
    assert sensor.next_due() == 110.0
    now[0] = 110.0
    assert sensor.due()


def test_access_denied_is_a_warning_not_an_empty_answer() -> None:
    # macOS refuses the listing to non-root users; this Linux machine cannot.
    sensor = NetworkSensor(table=Table(refuse=True))
    assert sensor.scan() is None
    assert "access denied" in sensor.warnings[0]


@pytest.mark.skipif(not LINUX, reason="/proc/net is Linux's")
def test_proc_net_table_agrees_with_psutil() -> None:
    with listener() as server, connection(server) as client:
        fast = NetworkSensor(table=ProcNetTable()).scan() or []
        portable = NetworkSensor(table=PsutilTable()).scan() or []
        ours = {("127.0.0.1", _port(client), "127.0.0.1", _port(server))}

        def mine(observations: list[ConnectionObservation]) -> list[ConnectionObservation]:
            return [o for o in observations
                    if (o.local_ip, o.local_port, o.remote_ip, o.remote_port) in ours]

        assert mine(fast) == mine(portable)
        (observation,) = mine(fast)
        assert (observation.pid, observation.protocol) == (os.getpid(), "tcp")


# /proc/net/tcp as the kernel writes it: 127.0.0.1:40000 -> 127.0.0.1:8443, established.
TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
              "   uid  timeout inode\n")


def tcp_line(slot: int, local_port: int, inode: int, state: str = "01") -> str:
    return (f"   {slot}: 0100007F:{local_port:04X} 0100007F:20FB {state} 00000000:00000000 "
            f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 20 4 30 10 -1\n")


def test_a_socket_the_kernel_lists_twice_is_one_connection(tmp_path: Path) -> None:
    # The tables are written over several reads; a socket opened in between shifts one
    # already read into the next read, so it appears twice in one listing (a known
    # property of /proc/net/tcp, seen here in a full test run).
    net = tmp_path / "net"
    net.mkdir()
    (net / "tcp").write_text(TCP_HEADER + tcp_line(0, 40000, 5001) + tcp_line(1, 40001, 5002)
                             + tcp_line(2, 40000, 5001)  # 5001 again
                             # Not yet accepted (inode 0): the same addresses twice, once.
                             + tcp_line(3, 40002, 0, "03") + tcp_line(4, 40002, 0, "03")
                             # Accepted between two reads: inode 0, then its own.
                             + tcp_line(5, 40003, 0, "03") + tcp_line(6, 40003, 5003))
    connections = ProcNetTable(tmp_path).connections()
    assert sorted((c.local_port, c.inode) for c in connections) == [
        (40000, 5001), (40001, 5002), (40002, 0), (40003, 5003)]
    assert {(c.remote_ip, c.remote_port) for c in connections} == {("127.0.0.1", 8443)}


@pytest.mark.skipif(not LINUX, reason="/proc/net is Linux's")
def test_owners_are_looked_up_only_for_wanted_connections(make_engine: Any) -> None:
    class Counting(ProcNetTable):
        def __init__(self) -> None:
            super().__init__()
            self.lookups: list[set[int]] = []

        def owners(self, inodes: set[int]) -> dict[int, int]:
            self.lookups.append(set(inodes))
            return super().owners(inodes)

    table = Counting()
    with listener() as watched, listener() as other:
        engine: Engine = make_engine(POLICY.format(port=_port(watched)))
        with connection(other):
            sensor = NetworkSensor(table=table)
            assert sensor.scan(lambda o: bool(engine.evaluate(o))) == []
            assert table.lookups == []  # nothing wanted: no walk through every process
            with connection(watched):
                (observation,) = sensor.scan(lambda o: bool(engine.evaluate(o))) or []
                assert observation.pid == os.getpid()
                assert len(table.lookups) == 1 and len(table.lookups[0]) == 1


def test_watch_cli_reports_a_connection_and_its_end(
    tmp_path: Path, lines: Any, agent_environ: Any, agent_command: list[str]
) -> None:
    with listener() as server:
        policy = tmp_path / "loopback.yaml"
        policy.write_text(POLICY.format(port=_port(server)))
        watch = subprocess.Popen(
            [*agent_command, "watch", "--json", "--policy", str(policy), "--no-processes",
             "--no-installed", "--network-interval", "0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_environ())
        try:
            out, err = lines(watch.stdout), lines(watch.stderr)
            err.next_matching(lambda line: "watching" in line)
            with connection(server) as client:
                opened = json.loads(out.next_matching(lambda line: '"opened"' in line))
                assert opened["pid"] == os.getpid()
                assert opened["evidence"]["local_address"] == f"127.0.0.1:{_port(client)}"
            resolved = json.loads(out.next_matching(lambda line: '"resolved"' in line))
            assert resolved["key"] == opened["key"]
            watch.send_signal(signal.SIGTERM)
            assert watch.wait(timeout=10) == 0
        finally:
            if watch.poll() is None:
                watch.kill()
            watch.wait()
