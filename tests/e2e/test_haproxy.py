"""Debian's HAProxy, configured by deploy/haproxy.cfg, in front of three server processes.

- Agents (simulated ones on the real wire client, and a real `warden-agent run`)
  talk only to HAProxy. One server process is killed with SIGKILL mid-run: its
  agents carry on through the other two, every event is stored exactly once, and
  the real agent's finding arrives.
- The servers see each client's own address (HAProxy's X-Forwarded-For, trusted
  from the proxy's address only): failed enrollments are limited per real
  client across the three processes; a client's own X-Forwarded-For is ignored,
  whether sent through the proxy or straight to a server.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer
from tests.e2e.lb_harness import HAProxy, haproxy_binary, post_from
from tests.e2e.pg_control import base_url, fresh_database
from tests.e2e.sim_agents import FleetPlan, SimulatedFleet, check_delivery
from tests.e2e.test_scale_out import SecondServer

# Three servers and HAProxy start, then a fleet runs for a minute or two.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ENROLL_LIMIT = 3
PLAN = FleetPlan(agents=15, events_per_agent=60, event_interval=0.05)
SYNC = 45.0


class Cluster:
    def __init__(self, servers: list[WardenServer], proxy: HAProxy, database_url: str) -> None:
        self.servers = servers
        self.proxy = proxy
        self.database_url = database_url


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("needs Debian's HAProxy: apt-get install haproxy")
    pg = base_url()
    if pg is None:
        pytest.skip("several server processes share PostgreSQL: set WARDEN_TEST_DATABASE_URL")
    with fresh_database(pg, prefix="warden_lb") as url:
        first = WardenServer(tmp_path / "s1", tmp_path / "s1.log", env={
            "WARDEN_DATABASE_URL": url,
            "WARDEN_TRUSTED_PROXIES": "127.0.0.1",
            "WARDEN_ENROLL_FAILURES_PER_ADDRESS": str(ENROLL_LIMIT)})
        first.startup_timeout = 120.0  # three servers on a busy 2-core machine
        servers = [first] + [SecondServer(first, tmp_path / f"s{n}", tmp_path / f"s{n}.log")
                             for n in (2, 3)]
        proxy = HAProxy(binary, [server.port for server in servers], tmp_path)
        try:
            for server in servers:
                server.start()
            proxy.start()
            yield Cluster(servers, proxy, url)
        finally:
            proxy.stop()
            for server in servers:
                if server.process is not None:
                    server.stop(signal.SIGKILL)


def test_agents_carry_on_through_the_others_when_a_server_process_dies(
    cluster: Cluster, tmp_path: Path, fake: FakeProcesses
) -> None:
    first = cluster.servers[0]
    fleet = SimulatedFleet([cluster.proxy.url], first.enroll_secret, PLAN)
    # A real agent too, configured with the proxy's address as its server.
    agent = AgentProcess(first, tmp_path / "agent", tmp_path / "bin", tmp_path / "agent.log",
                         server_url=cluster.proxy.url)
    agent.start()
    fleet.start()
    try:
        # A third of the events in: then one server process dies without a word.
        wait_for(lambda: fleet.acknowledged_count() >= fleet.total_events // 3, 90,
                 "a third of the fleet's events")
        cluster.servers[1].stop(signal.SIGKILL)
        telegram = fake.start("telegram-desktop")
        finished = fleet.wait(120)
        fleet.stop()
        assert finished, "simulated agents still had events 120 s after the kill"
        wait_for(lambda: any(item["evidence"].get("pid") == telegram.pid
                             for item in first.findings(app="telegram", sensor="process")),
                 SYNC, "the real agent's finding, after the kill, through the proxy")
    finally:
        fleet.stop()
        agent.stop(signal.SIGKILL)
    delivery = check_delivery(fleet, cluster.database_url)
    assert delivery.exactly_once, delivery
    assert delivery.stored == fleet.total_events
    # Whatever the kill cut short was answered in the API's error shape, never HTML.
    assert not fleet.tally.malformed, fleet.tally.malformed
    # The survivors served the rest: both still answer, and agree.
    third = cluster.servers[2]
    assert len(first.findings()) == len(third.findings())


def test_limits_count_each_real_client_and_ignore_a_client_s_own_forwarded_for(
    cluster: Cluster,
) -> None:
    lb = cluster.proxy.url
    path = "/api/v1/agent/enroll"
    guess = {"Authorization": "Bearer wen_guess"}
    facts = {"hostname": "desk", "machine_id": "m-lb", "os": "linux", "os_version": "12",
             "arch": "x86_64", "agent_version": "0.1.0", "user": "u"}
    # Round robin: the attacker's guesses land on all three processes; the limit is one.
    for attempt in range(ENROLL_LIMIT):
        assert post_from("127.0.0.5", lb, path, facts, guess)[0] == 401, attempt
    status, headers = post_from("127.0.0.5", lb, path, facts, guess)
    assert status == 429 and int(headers["retry-after"]) > 0
    # Another client behind the same proxy is not held back, even claiming to be the first
    # (HAProxy drops what a client says; the servers go by what the proxy saw)...
    claimed = {**guess, "X-Forwarded-For": "127.0.0.9"}
    assert post_from("127.0.0.6", lb, path, facts, claimed)[0] == 401
    # ...nor can the limited client launder itself by claiming to be another.
    assert post_from("127.0.0.5", lb, path, facts, claimed)[0] == 429
    # Straight to a server, a client that is not the proxy is taken for itself: its header
    # is ignored, so claiming the limited address neither blocks nor frees anyone.
    direct = cluster.servers[0].url
    assert post_from("127.0.0.7", direct, path, facts,
                     {**guess, "X-Forwarded-For": "127.0.0.5"})[0] == 401
    assert post_from("127.0.0.5", direct, path, facts,
                     {**guess, "X-Forwarded-For": "127.0.0.8"})[0] == 429
