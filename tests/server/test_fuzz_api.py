"""Schemathesis against the server's own /openapi.json, with every check it has.

Each answer is checked by all of Schemathesis's checks (status codes, content
types, headers and bodies as documented, valid data accepted, invalid data
refused, auth not ignored, `Allow` on 405, missing required headers ...), not
only "no 5xx"; so `/openapi.json` is the truth a generated client can rely on.

Every operation in the document is fuzzed over real HTTP on loopback (the
`live_server` uvicorn), in rounds that differ by who is asking:

- the right caller (an admin API token, an agent token, the enrollment secret
  for enroll), with schema-conforming data (positive) and with data that breaks
  the schema (negative);
- the right caller with the path pointed at rows that exist, so the handlers
  behind the 404s run too (ids too big for any column have a test of their own,
  below: the first bug this run found);
- the right caller over Schemathesis's coverage phase: boundary values, missing
  required parameters, methods the path does not have (405 with `Allow`);
- a viewer and an analyst token (403 where the role is too low), the other
  door's valid token, a made-up token and no `Authorization` at all (all 401).

OpenAPI cannot state a constraint between parameters, so three are taught to
the generator of valid (positive) cases instead: a cursor is one the server
handed out for the same list, order and direction (any other string is rightly
`422 invalid_cursor`); `since` is before `until`; an uploaded policy is a
policy (the policy language is richer than a JSON schema). Invalid (negative)
cases are left as generated, and every check runs on every answer.

Each answer must be below 500, and each error must be the API's JSON error shape
`{"error": {"code", "message", ...}}`. Generation is derandomised (Hypothesis
seeds from the test function, not the clock) and no example database is kept, so
a run of the same test selection sends the same requests. (Hypothesis also mixes
in literals from the project modules imported so far, so running this file alone
and within the whole suite draw somewhat different cases, each reproducibly.)

The document is fuzzed as the server serves it: the routes that read their body
by hand (gzip-aware events, check-in, YAML policies) describe it themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis.strategies import SearchStrategy
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from sqlalchemy.orm import Session, sessionmaker

from server.settings import ServerSettings
from tests.server.fuzz_support import (
    AGENT_PREFIX,
    Fuzzer,
    has_inputs,
    issued_cursors,
    right_caller,
    seed_rows,
)
from tests.server.mdm_standins import StandIn, running

# Examples per round. Hypothesis stops early when an operation's input space is
# smaller (GET /stats has one possible request), so the total is counted, not assumed.
POSITIVE = 15
NEGATIVE = 10
EXISTING_ROWS = 6
WRONG_CALLER = 2
MIN_REQUESTS = 2_000


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    # Schemathesis's `ignored_auth` check probes every successful enrollment again with a
    # wrong secret; the per-address limit on failures (tests/server/test_enroll_limit.py)
    # would soon lock loopback out of enrolling at all.
    # Connectors the fuzzer adds name made-up MDM hosts: the periodic syncs stay off.
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url,
                          enroll_failures_per_address=1_000_000, connector_poll_seconds=86400)


@pytest.fixture
def fuzzer(live_server: str, admin_token: str, enroll_secret: str,
           db: sessionmaker[Session]) -> Iterator[Fuzzer]:
    # The seeded MDM connector syncs from a stand-in of Jamf Pro on loopback.
    with running(StandIn()) as jamf:
        existing = seed_rows(live_server, admin_token, enroll_secret, jamf.url)
        yield from _fuzzer(live_server, db, existing, admin_token)


def _fuzzer(live_server: str, db: sessionmaker[Session], existing: dict[str, str | int],
            admin_token: str) -> Iterator[Fuzzer]:
    fuzzer = Fuzzer(live_server, db, existing, issued_cursors(live_server, admin_token))
    try:
        yield fuzzer
    finally:
        fuzzer.close()


def fuzz_operation(fuzzer: Fuzzer, operation: Any, tag: str) -> None:
    callers = fuzzer.callers(tag)
    path = operation.path
    token = right_caller(path, callers)

    def strategy(mode: GenerationMode = GenerationMode.POSITIVE,
                 **fixed: Any) -> SearchStrategy[Case[Any]]:
        cases: SearchStrategy[Case[Any]] = operation.as_strategy(generation_mode=mode, **fixed)
        return cases.filter(callers.spares_callers).map(fuzzer.as_promised)

    fuzzer.run_round(strategy(), POSITIVE, token, "right")
    fuzzer.run_coverage(operation, callers, token)
    if has_inputs(operation):
        fuzzer.run_round(strategy(GenerationMode.NEGATIVE), NEGATIVE, token, "right",
                         negative=True)
    names = [param["name"] for param in operation.definition.raw.get("parameters", [])
             if param["in"] == "path"]
    if names:
        fixed = {name: fuzzer.existing[name] for name in names}
        fuzzer.run_round(strategy(path_parameters=fixed), EXISTING_ROWS, token, "right")
    wrong: list[tuple[str, str | None]] = [("viewer", callers.viewer),
                                           ("analyst", callers.analyst), ("none", None),
                                           ("made-up", "wat_" + "x" * 40)]
    wrong.append(("admin", callers.admin) if path.startswith(AGENT_PREFIX)
                 else ("agent", callers.agent))
    for caller, wrong_token in wrong:
        fuzzer.run_round(strategy(), WRONG_CALLER, wrong_token, caller)


# The fuzz run is about the HTTP layer; SQLite is enough (the store suites cover PostgreSQL).
# About 2,500 requests in all: 35-60 s on a quiet machine, several minutes on a loaded one.
# The operations are dealt into shards, each a test with its own server, so the workers
# share the run and no one test nears its time cap.
SHARDS = 4


@pytest.mark.timeout(360)
@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_answer_passes_all_schemathesis_checks_for_every_caller(
    app: FastAPI, fuzzer: Fuzzer, shard: int
) -> None:
    schema = schemathesis.openapi.from_dict(app.openapi())
    everything = [result.ok() for result in schema.get_all_operations()
                  if isinstance(result, Ok)]
    assert len(everything) >= 30, "the OpenAPI document lost its routes"

    operations = everything[shard::SHARDS]
    for index, operation in enumerate(everything):
        if index % SHARDS == shard:
            fuzz_operation(fuzzer, operation, str(index))

    tally = fuzzer.tally
    report = "\n".join(tally.problems)
    assert not tally.problems, f"{tally.failures.total()} bad answers {tally.failures}:\n{report}"
    assert tally.requests >= MIN_REQUESTS * len(operations) // len(everything), \
        tally.by_operation
    # Every operation was reached, and with the right caller got past authentication:
    # a fuzz run that only ever collected 401s would prove nothing.
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        assert tally.by_operation[label] > 0, label
        assert tally.past_auth[f"{label} right"] > 0, f"{label} never got past auth"


# Ids no row can have: past PostgreSQL's `integer` (2**31 - 1), past SQLite's 64 bits,
# past anything. Handed to the database they used to fail there: a 500, found by the
# fuzz run above.
TOO_BIG = (str(2**31), str(2**63), "99999999999999999999")
ID_PATHS = [
    ("GET", "/api/v1/findings/{id}"),
    ("POST", "/api/v1/findings/{id}/triage"),
    ("GET", "/api/v1/violations/{id}"),
    ("POST", "/api/v1/violations/{id}/triage"),
    ("GET", "/api/v1/policies/{id}"),
    ("GET", "/api/v1/policies/{id}/impact"),
    ("GET", "/api/v1/policies/diff?from={id}&to=1"),
    ("GET", "/api/v1/policies/diff?from=1&to={id}"),
    ("POST", "/api/v1/policies/{id}/activate"),
    ("POST", "/api/v1/tokens/{id}/revoke"),
    ("POST", "/api/v1/secrets/{id}/revoke"),
    ("POST", "/api/v1/users/{id}/disable"),
    ("POST", "/api/v1/users/{id}/enable"),
]


def test_an_id_too_big_for_its_column_is_refused_not_a_500(
    app: FastAPI, admin_token: str
) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path in ID_PATHS:
            for too_big in TOO_BIG:
                url = path.format(id=too_big)
                response = client.request(method, url, json={"state": "acknowledged"},
                                          headers={"Authorization": f"Bearer {admin_token}"})
                assert response.status_code in (404, 422), f"{method} {url}: {response.text}"
                assert response.json()["error"]["code"] in ("not_found", "validation_error")


def test_every_operation_declares_its_answer_and_its_errors(app: FastAPI) -> None:
    """What the fuzz run relies on, checked in a blink: each API operation names the model of
    its success answer and answers 401 and 422 with the one error body."""
    error_body = {"$ref": "#/components/schemas/ErrorResponse"}
    document = app.openapi()
    operations = [(method, path, operation) for path, methods in document["paths"].items()
                  if path.startswith("/api/v1/") for method, operation in methods.items()]
    assert len(operations) >= 30
    for method, path, operation in operations:
        responses = operation["responses"]
        label = f"{method.upper()} {path}"
        for status in ("401", "422"):
            assert responses[status]["content"]["application/json"]["schema"] == error_body, \
                (label, status)
        # One success answer, or two where the outcome differs (201 made, 200 merged).
        successes = [status for status in responses if status.startswith("2")]
        assert 1 <= len(successes) <= 2, (label, successes)
        for success in successes:
            schema = responses[success]["content"]["application/json"]["schema"]
            assert schema.get("$ref") or schema.get("anyOf") or \
                path == "/api/v1/agent/policy", (label, schema)
        assert operation.get("security"), label
