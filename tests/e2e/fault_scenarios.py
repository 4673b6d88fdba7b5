"""Faults under load, as tests/e2e/test_faults.py checks them and bench/faults.py reports them.

- `kill_server_under_load`: a simulated fleet uploads; once a quarter of its
  events are acknowledged the server process gets SIGKILL (no shutdown, no
  flush), the agents find it gone and back off, the server is started again on
  the same data, and the fleet finishes.
- `database_outage_under_load`: the same fleet; PostgreSQL is stopped under it
  (fast shutdown cuts every session) while the server keeps running, then
  started again. Meanwhile the server must answer 503 with Retry-After, and
  afterwards serve again by itself, same process.

Either way the database is then held against what the fleet produced and was
told (`sim_agents.check_delivery`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.e2e.conftest import WardenServer
from tests.e2e.pg_control import outage
from tests.e2e.sim_agents import Delivery, FleetPlan, SimulatedFleet, Tally, check_delivery


class ScenarioTimeout(Exception):
    """A step did not happen before its deadline; the message says which."""


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a condition until it holds, or raise at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)  # polling interval of a condition, not a synchronisation sleep


@dataclass
class ScenarioResult:
    name: str
    delivery: Delivery
    tally: Tally
    finished: bool  # every agent emptied its outbox before the deadline
    acknowledged_before_fault: int
    seconds: float
    # What GET /healthz answered while the database was down (outage scenario only).
    health_during_outage: tuple[int, dict[str, Any]] | None = None
    same_server_process: bool = True
    notes: list[str] = field(default_factory=list)


def _fleet_until_quarter(server: WardenServer, plan: FleetPlan, timeout: float
                         ) -> SimulatedFleet:
    fleet = SimulatedFleet([server.url], server.enroll_secret, plan)
    fleet.start()
    wait_until(lambda: fleet.acknowledged_count() >= fleet.total_events // 4, timeout,
               "a quarter of the events acknowledged")
    return fleet


def kill_server_under_load(name: str, server: WardenServer, database_url: str,
                           plan: FleetPlan, timeout: float = 90.0) -> ScenarioResult:
    started = time.monotonic()
    fleet = _fleet_until_quarter(server, plan, timeout)
    try:
        acknowledged = fleet.acknowledged_count()
        server.stop(signal.SIGKILL)
        tried = fleet.tally.tried
        # Down long enough for every agent to notice and back off at least once.
        wait_until(lambda: fleet.tally.unanswered >= plan.agents
                   and fleet.tally.tried > tried + plan.agents, timeout,
                   "uploads failing against the killed server")
        server.start()
        finished = fleet.wait(timeout)
    finally:
        fleet.stop()
    return ScenarioResult(name=name, delivery=check_delivery(fleet, database_url),
                          tally=fleet.tally, finished=finished,
                          acknowledged_before_fault=acknowledged,
                          seconds=time.monotonic() - started)


def database_outage_under_load(name: str, server: WardenServer, database_url: str,
                               cluster_url: str, plan: FleetPlan,
                               timeout: float = 90.0) -> ScenarioResult:
    """`cluster_url`: any database on the same PostgreSQL, to see when it is back."""
    started = time.monotonic()
    assert server.process is not None
    pid = server.process.pid
    fleet = _fleet_until_quarter(server, plan, timeout)
    try:
        acknowledged = fleet.acknowledged_count()
        busy = fleet.tally.statuses[503]
        with outage(cluster_url):
            wait_until(lambda: fleet.tally.statuses[503] >= busy + plan.agents, timeout,
                       "503s from the server while PostgreSQL is down")
            health = requests.get(f"{server.url}/healthz", timeout=10)
            health_during = (health.status_code, health.json())
        finished = fleet.wait(timeout)
    finally:
        fleet.stop()
    same = server.process is not None and server.process.pid == pid \
        and server.process.poll() is None
    return ScenarioResult(name=name, delivery=check_delivery(fleet, database_url),
                          tally=fleet.tally, finished=finished,
                          acknowledged_before_fault=acknowledged,
                          seconds=time.monotonic() - started,
                          health_during_outage=health_during, same_server_process=same)
