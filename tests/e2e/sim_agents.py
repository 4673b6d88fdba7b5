"""Simulated agents: many uploaders in one process, for fault and scale-out tests and benches.

Each simulated agent is a thread with the real wire client (`agent.uplink.client.AgentClient`:
gzip batches, `RetryLater` on connection errors, 5xx and 503 with Retry-After), the
real backoff (`agent.uplink.backoff.Backoff`, scaled down) and an in-memory outbox in place
of the agent's SQLite spool, under the same rule: an event leaves the outbox only
when the server answered its id (accepted or duplicate), which it does after commit.

Events are made at a steady pace whether or not the server answers, so an outage
builds a backlog as it would on real machines. Each agent cycles through a few
finding keys: opened, then resolved, then opened again... so the findings the
server ends with say whether every event was applied exactly once (a finding's
`count` is the number of times it was opened).

Every HTTP answer is tallied through a `requests` response hook: status codes,
whether errors had the JSON error shape, whether 503s said when to retry.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
import sqlalchemy as sa

from agent.uplink.backoff import Backoff
from agent.uplink.client import AgentClient, ClientError, RetryLater
from policies.wire import EnrollRequest


@dataclass(frozen=True)
class FleetPlan:
    agents: int = 50
    events_per_agent: int = 40
    keys_per_agent: int = 4
    batch_events: int = 10
    # One agent makes an event every this many seconds (a busy machine, compressed).
    event_interval: float = 0.05
    # The agent's backoff, scaled down from 1 s .. 60 s so a test waits seconds, not minutes.
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    request_timeout: float = 15.0


@dataclass
class Tally:
    """What the fleet saw on the wire; shared by every agent thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    tried: int = 0  # upload attempts, answered or not
    statuses: Counter[int] = field(default_factory=Counter)
    # Ids the server answered as "accepted": each must be answered so at most once.
    accepted: Counter[str] = field(default_factory=Counter)
    duplicates_answered: int = 0
    # Errors without the JSON error shape, 503s without Retry-After.
    malformed: list[str] = field(default_factory=list)

    def count_try(self) -> None:
        with self.lock:
            self.tried += 1

    def record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A `requests` response hook."""
        problem = _malformed(response)
        accepted: list[str] = []
        duplicates: list[str] = []
        if response.status_code == 200 and response.request.path_url.endswith("/events"):
            body = response.json()
            accepted, duplicates = body["accepted"], body["duplicates"]
        with self.lock:
            self.statuses[response.status_code] += 1
            self.accepted.update(accepted)
            self.duplicates_answered += len(duplicates)
            if problem and len(self.malformed) < 20:
                self.malformed.append(problem)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def unanswered(self) -> int:
        """Tries that got no HTTP answer: refused connections, resets (server down)."""
        return self.tried - self.answered

    @property
    def server_errors(self) -> int:
        """5xx answers other than 503 (503 is the documented "retry later")."""
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)


def _malformed(response: requests.Response) -> str | None:
    if response.status_code < 400:
        return None
    where = f"{response.request.method} {response.request.path_url} -> {response.status_code}"
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return f"{where}: not a JSON error body: {response.text[:200]!r}"
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return f"{where}: not the error shape: {response.text[:200]!r}"
    if response.status_code == 503 and not response.headers.get("Retry-After"):
        return f"{where}: 503 without Retry-After"
    return None


class SimulatedAgent:
    def __init__(self, index: int, token: str, agent_id: str, urls: list[str],
                 plan: FleetPlan, tally: Tally, seed: int) -> None:
        self.index = index
        self.token = token
        self.agent_id = agent_id
        self.plan = plan
        self.tally = tally
        self.rng = random.Random(seed)
        self.session = requests.Session()
        self.session.hooks["response"].append(tally.record)
        # One client per server; batches go to each in turn (a load balancer's round robin).
        self.clients = [AgentClient(url, session=self.session, timeout=plan.request_timeout)
                        for url in urls]
        self.produced: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.acknowledged: set[str] = set()
        self.refusals: list[str] = []
        self._last_time = dt.datetime.min.replace(tzinfo=dt.UTC)

    @property
    def done(self) -> bool:
        return len(self.produced) == self.plan.events_per_agent and not self.outbox

    def run(self, stop: threading.Event, started: float) -> None:
        backoff = Backoff(base=self.plan.backoff_base, cap=self.plan.backoff_cap, rng=self.rng)
        tries = 0
        try:
            while not stop.is_set() and not self.done:
                self._produce_due(started)
                if not self.outbox:
                    stop.wait(self._until_next_event(started))
                    continue
                batch = self.outbox[:self.plan.batch_events]
                client = self.clients[tries % len(self.clients)]
                tries += 1
                self.tally.count_try()
                try:
                    committed = client.post_events(self.token, batch)
                except RetryLater as exc:
                    stop.wait(backoff.next_delay(exc.seconds))
                    continue
                except ClientError as exc:
                    # A refusal retrying will not fix: a bug in the fleet or the server.
                    self.refusals.append(str(exc))
                    stop.wait(backoff.next_delay())
                    continue
                backoff.reset()
                sent = {event["id"] for event in batch}
                self.acknowledged |= sent & committed
                self.outbox = [event for event in self.outbox if event["id"] not in committed]
        finally:
            self.session.close()

    def _produce_due(self, started: float) -> None:
        due = min(self.plan.events_per_agent,
                  1 + int((time.monotonic() - started) / self.plan.event_interval))
        while len(self.produced) < due:
            event = self._event(len(self.produced))
            self.produced.append(event)
            self.outbox.append(event)

    def _until_next_event(self, started: float) -> float:
        if len(self.produced) >= self.plan.events_per_agent:
            return 0.0
        next_at = started + len(self.produced) * self.plan.event_interval
        return max(0.001, next_at - time.monotonic())

    def _event(self, number: int) -> dict[str, Any]:
        keys = self.plan.keys_per_agent
        key = f"process:sim-{self.index}:{number % keys}"
        opened = (number // keys) % 2 == 0
        # Strictly increasing per agent: findings follow event time.
        now = max(dt.datetime.now(dt.UTC), self._last_time + dt.timedelta(microseconds=1))
        self._last_time = now
        finding: dict[str, Any] = {"key": key}
        if opened:
            finding.update(app="telegram", sensor="process", verdict="deny", action="notify",
                           evidence={"pid": 10_000 + number, "exe": "/opt/Telegram/Telegram"},
                           alternative="signal")
        return {"id": str(uuid.uuid4()), "type": "finding_opened" if opened else
                "finding_resolved", "time": now.isoformat(), "finding": finding}

    def expected_findings(self) -> dict[str, tuple[int, str]]:
        """key -> (times opened, final status), from the events produced."""
        expected: dict[str, tuple[int, str]] = {}
        for event in self.produced:
            key = event["finding"]["key"]
            opened, _ = expected.get(key, (0, "open"))
            if event["type"] == "finding_opened":
                expected[key] = (opened + 1, "open")
            else:
                expected[key] = (opened, "resolved")
        return expected


class SimulatedFleet:
    """N simulated agents, enrolled for real, uploading on threads until done or stopped."""

    def __init__(self, urls: list[str], enroll_secret: str, plan: FleetPlan | None = None,
                 seed: int = 7) -> None:
        self.plan = plan or FleetPlan()
        self.tally = Tally()
        self.stop_event = threading.Event()
        self.agents: list[SimulatedAgent] = []
        self._threads: list[threading.Thread] = []
        with requests.Session() as session:
            for index in range(self.plan.agents):
                # Agents are spread over the servers for enrollment too.
                client = AgentClient(urls[index % len(urls)], session=session)
                enrollment = client.enroll(enroll_secret, EnrollRequest(
                    hostname=f"sim-{index:03d}", machine_id=f"sim-{seed}-{index}",
                    os="linux", os_version="Debian 12", arch="x86_64",
                    agent_version="0.1.0", user="sim"))
                self.agents.append(SimulatedAgent(
                    index, enrollment.agent_token, enrollment.agent_id,
                    urls[index % len(urls):] + urls[:index % len(urls)], self.plan,
                    self.tally, seed * 1000 + index))

    def start(self) -> None:
        started = time.monotonic()
        for agent in self.agents:
            thread = threading.Thread(target=agent.run, args=(self.stop_event, started),
                                      name=f"sim-agent-{agent.index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait(self, timeout: float) -> bool:
        """True when every agent produced everything and emptied its outbox in time."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return all(agent.done for agent in self.agents)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(30)

    def acknowledged_count(self) -> int:
        # Read from other threads while agents run: a set's len is atomic enough for a gauge.
        return sum(len(agent.acknowledged) for agent in self.agents)

    @property
    def total_events(self) -> int:
        return self.plan.agents * self.plan.events_per_agent

    @property
    def agent_ids(self) -> list[str]:
        return [agent.agent_id for agent in self.agents]


@dataclass
class Delivery:
    """The server's database held against what the fleet made and was told."""

    produced: int
    stored: int
    acknowledged: int
    acknowledged_missing: int  # acknowledged to an agent, yet not stored: must be 0
    undelivered: int  # produced, not stored
    unexpected: int  # stored for these agents, never produced
    accepted_twice: int  # ids the server answered "accepted" more than once
    findings: int
    finding_mismatches: list[str]
    refusals: list[str]

    @property
    def exactly_once(self) -> bool:
        return not (self.acknowledged_missing or self.undelivered or self.unexpected
                    or self.accepted_twice or self.finding_mismatches or self.refusals)


def check_delivery(fleet: SimulatedFleet, database_url: str) -> Delivery:
    stored, findings = read_server_rows(database_url, fleet.agent_ids)
    produced = {event["id"] for agent in fleet.agents for event in agent.produced}
    acknowledged = set().union(*(agent.acknowledged for agent in fleet.agents))
    mismatches = []
    for agent in fleet.agents:
        for key, (opened, status) in agent.expected_findings().items():
            got = findings.get((agent.agent_id, key))
            if got != (opened, status):
                mismatches.append(f"{key}: expected count {opened} {status}, got {got}")
    extra_findings = set(findings) - {(agent.agent_id, key) for agent in fleet.agents
                                      for key in agent.expected_findings()}
    mismatches.extend(f"{key}: a finding no event opened" for _, key in extra_findings)
    return Delivery(
        produced=len(produced), stored=len(stored), acknowledged=len(acknowledged),
        acknowledged_missing=len(acknowledged - stored), undelivered=len(produced - stored),
        unexpected=len(stored - produced),
        accepted_twice=sum(1 for n in fleet.tally.accepted.values() if n > 1),
        findings=len(findings), finding_mismatches=mismatches[:20],
        refusals=[refusal for agent in fleet.agents for refusal in agent.refusals][:20])


def read_server_rows(database_url: str, agent_ids: Iterable[str]
                     ) -> tuple[set[str], dict[tuple[str, str], tuple[int, str]]]:
    """Event ids, and (agent, key) -> (count, status) of findings, straight from the database."""
    ids = list(agent_ids)
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            events = sa.table("events", sa.column("id"), sa.column("agent_id"))
            stored = set(connection.execute(
                sa.select(events.c.id).where(events.c.agent_id.in_(ids))).scalars())
            table = sa.table("findings", sa.column("agent_id"), sa.column("key"),
                             sa.column("count"), sa.column("status"))
            rows = connection.execute(sa.select(table.c.agent_id, table.c.key, table.c.count,
                                                table.c.status).where(
                table.c.agent_id.in_(ids))).all()
    finally:
        engine.dispose()
    return stored, {(agent_id, key): (count, status) for agent_id, key, count, status in rows}
