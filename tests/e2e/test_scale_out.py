"""Scale-out: two `warden server run` processes on one PostgreSQL database.

The first server is initialised against a fresh database; the second runs from a
copy of its data directory (so the same policy-signing key) with the same
WARDEN_DATABASE_URL, as N stateless servers behind a load balancer would. Then:

- both serve one policy version: the same ETag and the same signed bundle;
- simulated agents, enrolled on either, send every other batch to the other
  server, so events for one finding arrive at both: no finding twice (one per
  agent and key), each event applied once, the same counts read through either;
- a real `warden-agent run` enrolled on the second server gets the version an
  administrator activated through the first.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from policies.loader import default_policy_path
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer, free_port
from tests.e2e.pg_control import base_url, fresh_database
from tests.e2e.sim_agents import FleetPlan, SimulatedFleet, check_delivery

pytestmark = pytest.mark.slow

SYNC = 45.0  # enrollment + check-in every 5 s (+ jitter) + policy fetch
# 42 events over 4 keys: each opened 5 or 6 times, two left open (the stats show them).
PLAN = FleetPlan(agents=20, events_per_agent=42, event_interval=0.02)


class SecondServer(WardenServer):
    """Another server on the first one's database, from a copy of its data directory.

    No `warden server init`: the database is initialised already, and the copy
    carries the signing key, which every server of a deployment must share.
    """

    def __init__(self, first: WardenServer, data_dir: Path, log: Path) -> None:
        shutil.copytree(first.data_dir, data_dir)
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = dict(first.env)
        self.process = None
        self.run_args = list(first.run_args)
        self.startup_timeout = first.startup_timeout
        self.admin_token = first.admin_token
        self.enroll_secret = first.enroll_secret


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[WardenServer, WardenServer, str]]:
    cluster = base_url()
    if cluster is None:
        pytest.skip("scale-out runs on PostgreSQL: set WARDEN_TEST_DATABASE_URL")
    with fresh_database(cluster, prefix="warden_scale") as url:
        first = WardenServer(tmp_path / "a", tmp_path / "a.log",
                             env={"WARDEN_DATABASE_URL": url})
        second = SecondServer(first, tmp_path / "b", tmp_path / "b.log")
        try:
            first.start()
            second.start()
            yield first, second, url
        finally:
            # Stopped before the database is dropped; SIGKILL if a test left one stuck.
            for server in (first, second):
                if server.process is not None:
                    server.stop(signal.SIGKILL)


def signed_policy(server: WardenServer, token: str) -> tuple[str, bytes]:
    response = requests.get(f"{server.url}/api/v1/agent/policy", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.headers["ETag"], response.content


def every_finding(server: WardenServer) -> dict[int, dict[str, Any]]:
    """All findings through the API, page by page."""
    found: dict[int, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(100):  # bounded: 100 pages of 500
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = server.api("findings", params=params)
        found.update((item["id"], item) for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found
    pytest.fail("more than 100 pages of findings")


def comparable(finding: dict[str, Any]) -> tuple[Any, ...]:
    return (finding["agent_id"], finding["key"], finding["status"], finding["count"],
            finding["last_seen"])


def stable_stats(server: WardenServer) -> tuple[Any, ...]:
    """GET stats, less the active/silent split: that moves with the clock between two calls."""
    stats = server.api("stats")
    return (stats["open_findings_by_app"], stats["findings_per_day"],
            sum(stats["agents"].values()), stats["compliance"]["total"],
            stats["compliance"]["with_open_deny"])


def test_two_servers_on_one_database_agree(
    servers: tuple[WardenServer, WardenServer, str], tmp_path: Path, fake: FakeProcesses
) -> None:
    first, second, database_url = servers
    fleet = SimulatedFleet([first.url, second.url], first.enroll_secret, PLAN)
    token = fleet.agents[0].token

    # One policy version, signed with the one key: byte for byte the same answer.
    assert signed_policy(first, token) == signed_policy(second, token)

    fleet.start()
    finished = fleet.wait(90)
    fleet.stop()
    assert finished, "simulated agents still had events after 90 s"
    # Both servers took part.
    assert fleet.tally.statuses[200] >= PLAN.agents * 2
    delivery = check_delivery(fleet, database_url)
    assert delivery.exactly_once, delivery
    assert delivery.stored == PLAN.agents * PLAN.events_per_agent
    assert delivery.findings == PLAN.agents * PLAN.keys_per_agent

    # The same findings, counts and fleet through either door.
    from_first, from_second = every_finding(first), every_finding(second)
    assert len(from_first) == PLAN.agents * PLAN.keys_per_agent
    assert {key: comparable(item) for key, item in from_first.items()} == \
        {key: comparable(item) for key, item in from_second.items()}
    keys = [(item["agent_id"], item["key"]) for item in from_first.values()]
    assert len(keys) == len(set(keys)), "a finding stored twice for one agent and key"
    assert stable_stats(first) == stable_stats(second)
    assert stable_stats(first)[0] == {"telegram": PLAN.agents * 2}
    agents = {item["id"] for item in first.api("agents", params={"limit": 500})["items"]}
    assert agents == {item["id"] for item in
                      second.api("agents", params={"limit": 500})["items"]}
    assert agents == set(fleet.agent_ids)

    # A real agent enrolled on the second server reports there and is seen from the first.
    agent = AgentProcess(second, tmp_path / "agent", tmp_path / "bin", tmp_path / "agent.log")
    agent.start()
    try:
        telegram = fake.start("telegram-desktop")
        wait_for(lambda: any(item["evidence"].get("pid") == telegram.pid
                             for item in first.findings(app="telegram", sensor="process")),
                 SYNC, "the real agent's finding, read through the first server")
        old_version = wait_for(lambda: agent.status().get("policy_version"), SYNC,
                               "the real agent's first policy")

        # Activated through the first server; the second serves it and its agent gets it.
        text = default_policy_path().read_text(encoding="utf-8").replace(
            "name: default", "name: scale-out v2", 1)
        upload = requests.post(f"{first.url}/api/v1/policies", data=text.encode(), timeout=10,
                               headers={"Authorization": f"Bearer {first.admin_token}",
                                        "Content-Type": "application/yaml"})
        assert upload.status_code == 201, upload.text
        uploaded = upload.json()
        activated = first.api(f"policies/{uploaded['version_number']}/activate",
                              method="POST")
        assert activated["version"] != old_version
        etag, bundle = signed_policy(second, token)
        assert etag == f'"{activated["version"]}"'
        assert (etag, bundle) == signed_policy(first, token)
        wait_for(lambda: agent.status().get("policy_version") == activated["version"], SYNC,
                 "the real agent on the second server to apply the new version")
    finally:
        agent.stop(signal.SIGKILL)
