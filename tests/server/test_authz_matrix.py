"""The authorization matrix: every endpoint x every kind of caller, with the exact status.

Callers: no token, a bad token, an agent's token, another agent's token, and API
tokens with the viewer, analyst and admin roles. The admin / review API wants
an API token with enough role (agent tokens are refused: 401); the agent API
wants an agent token (API tokens are refused: 401) and acts only for the
agent the token belongs to. A last test checks the matrix lists every route
the app has, so a new endpoint cannot slip in unchecked.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from policies.loader import load_catalog
from server.models import Agent, ExceptionRequest, Finding, Violation
from server.store import agents, connectors, exceptions, policies, tokens, users
from tests.server.admin_support import (
    ALLOW_TELEGRAM,
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    bearer,
    event,
    post_events,
)
from tests.server.mdm_standins import CLIENT_ID, CLIENT_SECRET, StandIn, running

EnrolledAgent = Any
DB = sessionmaker[Session]
CALLERS = ("none", "bad", "agent", "other_agent", "viewer", "analyst", "admin")
ROLE_RANK = {"viewer": 0, "analyst": 1, "admin": 2}


@dataclass(frozen=True)
class Endpoint:
    method: str
    # placeholders: {finding} {violation} {victim} {revoked} {claimed} {secret} {token} {user}
    # {app} {connector} {exception} {request}
    path: str
    role: str  # the least role that may call it
    ok: int = 200
    body: Any = None  # JSON, or bytes sent as YAML

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


GRANT_UNTIL = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
POLICY_YAML = b"name: matrix\nrules:\n  - app: telegram\n    verdict: deny\n"
ADMIN_API = [
    Endpoint("GET", "/api/v1/findings", "viewer"),
    Endpoint("GET", "/api/v1/findings/export?format=csv", "viewer"),
    Endpoint("GET", "/api/v1/findings/{finding}", "viewer"),
    Endpoint("POST", "/api/v1/findings/{finding}/triage", "analyst",
             body={"state": "acknowledged", "comment": "matrix"}),
    Endpoint("GET", "/api/v1/violations", "viewer"),
    Endpoint("GET", "/api/v1/violations/export?format=csv", "viewer"),
    Endpoint("GET", "/api/v1/violations/{violation}", "viewer"),
    Endpoint("POST", "/api/v1/violations/{violation}/triage", "analyst",
             body={"state": "acknowledged", "comment": "matrix"}),
    Endpoint("GET", "/api/v1/compliance/history?days=7", "viewer"),
    Endpoint("GET", "/api/v1/reports/compliance?format=csv", "viewer"),
    Endpoint("POST", "/api/v1/findings/triage", "analyst",
             body={"ids": [1], "state": "false_positive", "comment": "matrix"}),
    Endpoint("GET", "/api/v1/agents", "viewer"),
    Endpoint("GET", "/api/v1/agents/{victim}", "viewer"),
    Endpoint("POST", "/api/v1/agents/{victim}/revoke", "admin"),
    Endpoint("POST", "/api/v1/agents/{revoked}/readmit", "admin"),
    Endpoint("GET", "/api/v1/reenrollments", "viewer"),
    Endpoint("POST", "/api/v1/agents/{claimed}/reenrollment/approve", "admin"),
    Endpoint("POST", "/api/v1/agents/{claimed}/reenrollment/reject", "admin"),
    Endpoint("GET", "/api/v1/policies", "viewer"),
    Endpoint("POST", "/api/v1/policies", "admin", ok=201, body=POLICY_YAML),
    Endpoint("GET", "/api/v1/policies/1", "viewer"),
    Endpoint("GET", "/api/v1/policies/diff?from=1&to=2", "viewer"),
    Endpoint("POST", "/api/v1/policies/1/activate", "admin"),
    Endpoint("POST", "/api/v1/policies/rollback", "admin"),
    Endpoint("GET", "/api/v1/policies/2/impact", "admin"),
    Endpoint("GET", "/api/v1/recommendations/{app}", "viewer"),
    Endpoint("GET", "/api/v1/stats", "viewer"),
    Endpoint("POST", "/api/v1/secrets", "admin", ok=201, body={"group": "matrix"}),
    Endpoint("GET", "/api/v1/secrets", "admin"),
    Endpoint("POST", "/api/v1/secrets/{secret}/revoke", "admin"),
    Endpoint("POST", "/api/v1/tokens", "admin", ok=201, body={"name": "m", "role": "viewer"}),
    Endpoint("GET", "/api/v1/tokens", "admin"),
    Endpoint("POST", "/api/v1/tokens/{token}/revoke", "admin"),
    Endpoint("POST", "/api/v1/users", "admin", ok=201,
             body={"username": "matrix", "password": "long enough pass", "role": "viewer"}),
    Endpoint("GET", "/api/v1/users", "admin"),
    Endpoint("POST", "/api/v1/users/{user}/disable", "admin"),
    Endpoint("POST", "/api/v1/users/{user}/enable", "admin"),
    Endpoint("GET", "/api/v1/audit", "admin"),
    Endpoint("POST", "/api/v1/connectors", "admin", ok=201,
             body={"name": "added", "kind": "jamf", "url": "https://jamf.example.org",
                   "client_id": "c", "secret": "s"}),
    Endpoint("GET", "/api/v1/connectors", "admin"),
    Endpoint("GET", "/api/v1/connectors/{connector}", "admin"),
    Endpoint("POST", "/api/v1/connectors/{connector}/sync", "admin"),
    Endpoint("DELETE", "/api/v1/connectors/{connector}", "admin"),
    Endpoint("POST", "/api/v1/exceptions", "admin", ok=201,
             body={"app": "telegram", "host": "victim", "until": GRANT_UNTIL,
                   "reason": "matrix"}),
    Endpoint("GET", "/api/v1/exceptions", "viewer"),
    Endpoint("GET", "/api/v1/exceptions/{exception}", "viewer"),
    Endpoint("POST", "/api/v1/exceptions/{exception}/revoke", "admin"),
    Endpoint("GET", "/api/v1/exception-requests", "viewer"),
    Endpoint("GET", "/api/v1/exception-requests/{request}", "viewer"),
    Endpoint("POST", "/api/v1/exception-requests/{request}/approve", "admin"),
    Endpoint("POST", "/api/v1/exception-requests/{request}/deny", "admin"),
]


@dataclass
class World:
    tokens: dict[str, str | None]
    ids: dict[str, Any]
    agent: EnrolledAgent
    other: EnrolledAgent


@pytest.fixture
def mdm() -> Iterator[StandIn]:
    with running(StandIn()) as standin:
        yield standin


@pytest.fixture
def world(client: TestClient, admin_token: str, api_token: Callable[..., str],
          enroll: Callable[..., EnrolledAgent], db: DB, enroll_secret: str,
          mdm: StandIn) -> World:
    agent, other, victim, revoked, claimed = (
        enroll(hostname=name) for name in ("agent-a", "agent-b", "victim", "revoked", "claimed"))
    post_events(client, agent.headers, event(TELEGRAM_PROCESS))
    # A person's request for an exception, as the agent uploads it.
    post_events(client, agent.headers, {
        "id": str(uuid.uuid4()), "type": "exception_requested",
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "request": {"app": "telegram", "days": 30, "reason": "matrix", "user": "alice"}})
    # Someone with the secret and `claimed`'s machine id, without its key: held for approval.
    held = client.post("/api/v1/agent/enroll", json=claimed.facts,
                       headers=bearer(enroll_secret))
    assert held.status_code == 409, held.text
    with db() as session:
        finding = session.scalars(sa.select(Finding.id)).one()
        violation = session.scalars(sa.select(Violation.id)).one()
        catalog = load_catalog()
        signer = client.app.state.context.signer  # type: ignore[attr-defined]
        second = policies.add_version(session, text=ALLOW_TELEGRAM, source_name="matrix",
                                      catalog=catalog, signer=signer, actor="test")
        # Version 2 active, 1 before it: there is something to roll back to.
        policies.activate(session, second.number, actor="test", signer=signer)
        agents.revoke(session, revoked.agent_id, actor="test")
        _, _ = tokens.create(session, name="spare", role="viewer", actor="test")
        granted, _ = exceptions.grant(session, "telegram", exceptions.Scope(group="press"),
                                      dt.datetime.now(dt.UTC) + dt.timedelta(days=3),
                                      "matrix", actor="test")
        request = session.scalars(sa.select(ExceptionRequest.id)).one()
        target_token, _ = tokens.create(session, name="target", role="viewer", actor="test")
        user = users.create(session, username="target", password="long enough pass",
                            role="viewer", actor="test")
        box = client.app.state.connector_runner.box  # type: ignore[attr-defined]
        connectors.create(session, name="matrix", kind="jamf",
                          settings={"url": mdm.url, "client_id": CLIENT_ID},
                          sealed_secret=box.seal(CLIENT_SECRET), interval_minutes=60,
                          group=None, actor="test")
        session.commit()
        ids = {"finding": finding, "violation": violation, "victim": victim.agent_id,
               "revoked": revoked.agent_id, "claimed": claimed.agent_id,
               "secret": 1, "app": "telegram", "token": target_token.id, "user": user.id,
               "connector": "matrix", "exception": granted.id, "request": request}
    callers: dict[str, str | None] = {
        "none": None, "bad": "wat_" + "x" * 43, "agent": agent.token,
        "other_agent": other.token, "viewer": api_token("viewer"),
        "analyst": api_token("analyst"), "admin": admin_token}
    return World(tokens=callers, ids=ids, agent=agent, other=other)


def call(client: TestClient, endpoint: Endpoint, token: str | None,
         ids: dict[str, Any]) -> Any:
    headers = bearer(token) if token else {}
    kwargs: dict[str, Any] = {}
    if isinstance(endpoint.body, bytes):
        kwargs["content"] = endpoint.body
        headers["Content-Type"] = "application/yaml"
    elif endpoint.body is not None:
        kwargs["json"] = endpoint.body
    return client.request(endpoint.method, endpoint.path.format(**ids), headers=headers,
                          **kwargs)


def expected_admin_status(endpoint: Endpoint, caller: str) -> int:
    if caller not in ROLE_RANK:
        return 401  # no token, a bad one, or an agent's: not a person's API token
    return endpoint.ok if ROLE_RANK[caller] >= ROLE_RANK[endpoint.role] else 403


def admin_api_mismatches(client: TestClient, world: World, endpoint: Endpoint) -> list[str]:
    """What `endpoint` answered each caller that the matrix does not expect (none: all well)."""
    got = {caller: call(client, endpoint, world.tokens[caller], world.ids) for caller in CALLERS}
    problems = []
    for caller, response in got.items():
        status, expected = response.status_code, expected_admin_status(endpoint, caller)
        if status != expected:
            problems.append(f"{endpoint} as {caller}: {status}, expected {expected}: "
                            f"{response.text[:300]}")
            continue
        if status >= 400 and response.json()["error"]["code"] not in ("unauthorized",
                                                                       "forbidden"):
            problems.append(f"{endpoint} as {caller}: error body {response.text[:300]}")
        if status == 401 and response.headers.get("www-authenticate") != "Bearer":
            problems.append(f"{endpoint} as {caller}: 401 without WWW-Authenticate: Bearer")
    return problems


# A route that changes something gets a world of its own; the routes that only read share
# one (a world is five enrolled agents, policies, an MDM connector...: most of the cost).
WRITES = [endpoint for endpoint in ADMIN_API if endpoint.method != "GET"]
READS = [endpoint for endpoint in ADMIN_API if endpoint.method == "GET"]


@pytest.mark.parametrize("endpoint", WRITES, ids=str)
def test_admin_api_matrix(client: TestClient, world: World, endpoint: Endpoint) -> None:
    assert admin_api_mismatches(client, world, endpoint) == []


def test_admin_api_matrix_of_the_routes_that_only_read(client: TestClient, world: World) -> None:
    assert len(READS) >= 25
    problems = [problem for endpoint in READS
                for problem in admin_api_mismatches(client, world, endpoint)]
    assert problems == [], "\n".join(problems)


# -- the agent API --------------------------------------------------------------------


def agent_row(db: DB, agent_id: str) -> Agent:
    with db() as session:
        row = session.get(Agent, agent_id)
        assert row is not None
        return row


def test_agent_enroll_matrix(client: TestClient, world: World, enroll_secret: str,
                             host_facts: Callable[..., dict[str, Any]]) -> None:
    for caller in CALLERS:
        token = world.tokens[caller]
        response = client.post("/api/v1/agent/enroll", json=host_facts(),
                               headers=bearer(token) if token else {})
        assert response.status_code == 401, caller
    # Only an enrollment secret enrolls.
    assert client.post("/api/v1/agent/enroll", json=host_facts(),
                       headers=bearer(enroll_secret)).status_code == 201


def test_agent_checkin_matrix(client: TestClient, world: World, db: DB) -> None:
    statuses = {}
    for caller in CALLERS:
        token = world.tokens[caller]
        response = client.post("/api/v1/agent/checkin",
                               json={"policy_version": f"from-{caller}"},
                               headers=bearer(token) if token else {})
        statuses[caller] = response.status_code
    assert statuses == {"none": 401, "bad": 401, "agent": 200, "other_agent": 200,
                        "viewer": 401, "analyst": 401, "admin": 401}
    # Each check-in changed its own agent only.
    assert agent_row(db, world.agent.agent_id).policy_version == "from-agent"
    assert agent_row(db, world.other.agent_id).policy_version == "from-other_agent"


def test_agent_policy_matrix(client: TestClient, world: World) -> None:
    statuses = {}
    for caller in CALLERS:
        token = world.tokens[caller]
        statuses[caller] = client.get("/api/v1/agent/policy",
                                      headers=bearer(token) if token else {}).status_code
    assert statuses == {"none": 401, "bad": 401, "agent": 200, "other_agent": 200,
                        "viewer": 401, "analyst": 401, "admin": 401}


def test_agent_events_matrix(client: TestClient, world: World, db: DB) -> None:
    with db() as session:
        before = {(agent_id, key) for agent_id, key in
                  session.execute(sa.select(Finding.agent_id, Finding.key))}
    posted: dict[str, dict[str, Any]] = {}
    statuses = {}
    for caller in CALLERS:
        token = world.tokens[caller]
        one = event(TELEGRAM_DEB)
        one["finding"]["key"] = f"telegram|installed|{caller}-{uuid.uuid4()}"
        posted[caller] = one
        statuses[caller] = client.post("/api/v1/agent/events", json={"events": [one]},
                                       headers=bearer(token) if token else {}).status_code
    assert statuses == {"none": 401, "bad": 401, "agent": 200, "other_agent": 200,
                        "viewer": 401, "analyst": 401, "admin": 401}
    with db() as session:
        after = {(agent_id, key) for agent_id, key in
                 session.execute(sa.select(Finding.agent_id, Finding.key))}
    # Exactly the two agents' events landed, each under the token's own agent.
    assert after - before == {(world.agent.agent_id, posted["agent"]["finding"]["key"]),
                              (world.other.agent_id, posted["other_agent"]["finding"]["key"])}


# -- completeness ----------------------------------------------------------------------


def test_the_matrix_covers_every_route(app: FastAPI) -> None:
    listed = {(endpoint.method, _template(endpoint.path)) for endpoint in ADMIN_API}
    listed |= {("POST", "/api/v1/agent/enroll"), ("POST", "/api/v1/agent/checkin"),
               ("GET", "/api/v1/agent/policy"), ("POST", "/api/v1/agent/events")}
    # Every API route is in the OpenAPI schema (only the dashboard's pages are not).
    routes = {(method.upper(), _template(path)) for path, operations in
              app.openapi()["paths"].items() if path.startswith("/api/v1/")
              for method in operations}
    assert routes == listed


def _template(path: str) -> str:
    """A path with every id (or {name} / {name:int}) as `{}`, and no query."""
    parts = []
    for part in path.split("?", 1)[0].split("/"):
        is_id = part.startswith("{") or part.isdigit()
        parts.append("{}" if is_id else part)
    return "/".join(parts)
