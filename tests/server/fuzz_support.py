"""The machinery of the Schemathesis run in test_fuzz_api.py: callers, rows to aim at,
cursors the server handed out, and every Schemathesis check on every answer."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import Case, GenerationMode
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase
from sqlalchemy.orm import Session, sessionmaker

from policies.loader import default_policy_path
from server.schemas.common import parse_time
from server.store import enroll_secrets, tokens
from tests.server.mdm_standins import CLIENT_ID as MDM_CLIENT_ID
from tests.server.mdm_standins import CLIENT_SECRET as MDM_CLIENT_SECRET

# Every check Schemathesis has, function checks and class-based ones alike.
load_all_checks()
ALL_CHECKS = [check for check in CHECKS.get_all() if not is_check_class(check)]


AGENT_PREFIX = "/api/v1/agent/"
# Errors every route may answer whoever asks: the body cap and routing (a generated
# path segment holding "/" names no route).
_ANY_CALLER_ERRORS = frozenset({404, 405, 413})


@dataclass
class Callers:
    """Credentials made fresh for each operation.

    Fresh, because fuzzing `POST tokens/{id}/revoke` or `POST secrets/{id}/revoke`
    may hit the caller's own id and lock the rest of the run out; cases aimed at
    the ids in use are filtered out as well (see `spares_callers`).
    """

    admin: str
    admin_id: int
    viewer: str
    analyst: str
    agent: str
    secret: str
    secret_id: int

    def spares_callers(self, case: Case[Any]) -> bool:
        params = case.path_parameters or {}
        return params.get("token_id") != self.admin_id and \
            params.get("secret_id") != self.secret_id


@dataclass
class Tally:
    requests: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    past_auth: Counter[str] = field(default_factory=Counter)
    # Bad answers by operation; the first few of each are described in `problems`.
    failures: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


class Fuzzer:
    def __init__(self, base_url: str, db: sessionmaker[Session],
                 existing: dict[str, str | int], cursors: dict[tuple[str, str, str], str]
                 ) -> None:
        self.base_url = base_url
        self.db = db
        # A row of each kind a path can name, so the handlers behind the 404s run too.
        self.existing = existing
        # A cursor the server handed out, per list (and order and direction).
        self.cursors = cursors
        self.policy_text = default_policy_path().read_text(encoding="utf-8")
        self.policy = yaml.safe_load(self.policy_text)
        self.session = requests.Session()
        # Loopback only: no proxy settings to read from the environment for each of the
        # run's ~10,000 requests (a twelfth of its time went there).
        self.session.trust_env = False
        self.tally = Tally()

    def close(self) -> None:
        self.session.close()

    def callers(self, tag: str) -> Callers:
        with self.db() as session:
            admin_row, admin = tokens.create(session, name=f"fuzz admin {tag}", role="admin",
                                             actor="fuzz")
            _, viewer = tokens.create(session, name=f"fuzz viewer {tag}", role="viewer",
                                      actor="fuzz")
            _, analyst = tokens.create(session, name=f"fuzz analyst {tag}", role="analyst",
                                       actor="fuzz")
            secret_row, secret = enroll_secrets.create(session, group=None, actor="fuzz")
            session.commit()
        agent = enroll_over_http(self.session, self.base_url, secret, f"fuzz-{tag}")
        return Callers(admin=admin, admin_id=admin_row.id, viewer=viewer, analyst=analyst,
                       agent=agent["agent_token"], secret=secret, secret_id=secret_row.id)

    # -- one request -----------------------------------------------------------

    def send(self, case: Case[Any], token: str | None, caller: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        if negates_a_header(case):
            # The missing or malformed Authorization is what this case tests: ours would
            # undo it (the other rounds send each kind of caller's token).
            headers = {}
        response = case.call(base_url=self.base_url, session=self.session, headers=headers,
                             timeout=30)
        label = f"{case.method} {case.path}"
        self.tally.requests += 1
        self.tally.by_operation[label] += 1
        if response.status_code != 401:
            self.tally.past_auth[f"{label} {caller}"] += 1
        problem = self.problem(response, caller, case.path) or \
            self.check_failures(case, response, headers)
        if problem:
            self.tally.failures[label] += 1
        if problem and self.tally.failures[label] <= 3:
            self.tally.problems.append(
                f"{label} as {caller}: {problem}\n  reproduce: {case.as_curl_command(headers)}")

    def check_failures(self, case: Case[Any], response: schemathesis.Response,
                       headers: dict[str, str]) -> str | None:
        """What Schemathesis's checks, all of them, find wrong with this answer."""
        try:
            case.validate_response(response, checks=ALL_CHECKS, headers=headers,
                                   transport_kwargs={"session": self.session,
                                                     "base_url": self.base_url})
        except FailureGroup as group:
            found = "; ".join(sorted({f"{failure.title}: {failure.message}"[:400]
                                      for failure in group.exceptions}))
            return f"{found}\n  answer: {response.status_code} {response.text[:300]}"
        return None

    @staticmethod
    def problem(response: schemathesis.Response, caller: str, path: str) -> str | None:
        status = response.status_code
        if status >= 500:
            return f"{status} {response.text[:300]!r}"
        if status >= 400:
            try:
                body = response.json()
            except ValueError:
                return f"{status} with a non-JSON body {response.text[:300]!r}"
            error = body.get("error") if isinstance(body, dict) else None
            if not (isinstance(error, dict) and isinstance(error.get("code"), str)
                    and isinstance(error.get("message"), str)):
                return f"{status} without the error shape: {response.text[:300]!r}"
        must_refuse = caller in ("none", "made-up") or (
            caller == "agent" and not path.startswith(AGENT_PREFIX)) or (
            caller == "admin" and path.startswith(AGENT_PREFIX))
        if must_refuse and path != "/healthz" and status not in {401, *_ANY_CALLER_ERRORS}:
            return f"{status} for a caller that must get 401"
        return None

    # -- rounds ----------------------------------------------------------------

    def run_round(self, strategy: SearchStrategy[Case[Any]], examples: int, token: str | None,
                  caller: str, negative: bool = False) -> None:
        @hypothesis_settings(max_examples=examples, derandomize=True, database=None,
                             deadline=None, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def round_(case: Case[Any]) -> None:
            self.send(case, token, caller)

        try:
            round_()
        except Unsatisfiable:
            # Some inputs have no invalid form (an optional free-text header): nothing to send.
            if not negative:
                raise

    def run_coverage(self, operation: Any, callers: Callers, token: str | None) -> None:
        """Schemathesis's coverage phase: boundaries, missing parameters, other methods.

        Each distinct request is sent once: `as_promised` gives every valid policy upload
        the same policy, which made 861 of the phase's 3,846 uploads (and their auth
        probes) one request sent again and again."""
        schema = operation.schema
        config = schema.config.generation_for(operation=operation, phase=TestPhase.COVERAGE)
        sent: set[str] = set()
        for case in schema.iter_coverage_cases(
                operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                generation_config=config):
            if not callers.spares_callers(case):
                continue
            case = self.as_promised(case)
            request = repr((case.method, case.path, case.path_parameters, case.query,
                            case.headers, case.cookies, case.media_type, case.body))
            if request not in sent:
                sent.add(request)
                self.send(case, token, "right")

    def as_promised(self, case: Case[Any]) -> Case[Any]:
        """A valid case, made to keep the promises OpenAPI cannot write down (see the top)."""
        if case.meta is None or not case.meta.generation.mode.is_positive:
            return case
        query = case.query
        if query and query.get("cursor"):
            key = (case.path, query.get("order", "last_seen"), query.get("direction", "desc"))
            query["cursor"] = self.cursors[key if case.path.endswith(("/findings", "/violations"))
                                           else (case.path, "", "")]
        if query and query.get("since") and query.get("until") and \
                parse_time(query["since"]) >= parse_time(query["until"]):
            del query["until"]
        if case.method == "POST" and case.path == "/api/v1/exceptions" and \
                isinstance(case.body, dict):
            # Only a catalog app, a known host and a time within the year are a grant.
            case.body = {"app": "telegram", "host": self.existing["host"],
                         "until": grant_until(), "reason": case.body.get("reason") or "fuzz"}
            if not str(case.body["reason"]).strip():
                case.body["reason"] = "fuzz"
        if case.method == "POST" and case.path == "/api/v1/policies":
            # Schemathesis writes a structure out as JSON or YAML as the media type says.
            case.body = self.policy_text if case.media_type == "text/plain" else self.policy
        return case


def grant_until() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()


def negates_a_header(case: Case[Any]) -> bool:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return False
    data = meta.phase.data
    locations = {getattr(data, "parameter_location", None)}
    locations |= {mutation.parameter_location for mutation in getattr(data, "mutations", ())}
    return ParameterLocation.HEADER in locations


def right_caller(path: str, callers: Callers) -> str:
    if path == "/api/v1/agent/enroll":
        return callers.secret
    return callers.agent if path.startswith(AGENT_PREFIX) else callers.admin


def has_inputs(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters")) or "requestBody" in definition


def enroll_over_http(session: requests.Session, base_url: str, secret: str,
                     hostname: str) -> Any:
    facts = {"hostname": hostname, "machine_id": uuid.uuid4().hex, "os": "linux",
             "os_version": "Debian 12", "arch": "x86_64", "agent_version": "0.1.0",
             "user": "fuzz"}
    response = session.post(f"{base_url}/api/v1/agent/enroll", json=facts, timeout=30,
                            headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 201, response.text
    return response.json()


def seed_rows(base_url: str, admin_token: str, enroll_secret: str,
              mdm_url: str) -> dict[str, str | int]:
    """Something of every kind a path names: agents, findings, policy versions, a user..."""
    admin = {"Authorization": f"Bearer {admin_token}"}

    def post(session: requests.Session, path: str, **kwargs: Any) -> Any:
        response = session.post(f"{base_url}/api/v1/{path}", timeout=30, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    with requests.Session() as session:
        agent = enroll_over_http(session, base_url, enroll_secret, "desk-01")
        events = [{"id": str(uuid.uuid4()), "type": "finding_opened",
                   "time": "2025-03-01T12:00:00Z",
                   "finding": {"key": f"process:telegram:{n}", "app": "telegram",
                               "sensor": "process", "verdict": "deny", "action": "notify",
                               "evidence": {"pid": 100 + n, "exe": "/opt/Telegram/Telegram"}}}
                  for n in range(3)]
        post(session, "agent/events", json={"events": events},
             headers={"Authorization": f"Bearer {agent['agent_token']}"})
        findings = session.get(f"{base_url}/api/v1/findings", headers=admin, timeout=30).json()
        policy = default_policy_path().read_bytes().replace(b"name:", b"name: fuzz copy of", 1)
        post(session, "policies", data=policy,
             headers={**admin, "Content-Type": "application/yaml"})
        spare_agent = enroll_over_http(session, base_url, enroll_secret, "spare")
        # A second machine with Telegram: violations have more than one page.
        post(session, "agent/events", json={"events": [{**events[0], "id": str(uuid.uuid4())}]},
             headers={"Authorization": f"Bearer {spare_agent['agent_token']}"})
        violations = session.get(f"{base_url}/api/v1/violations", headers=admin,
                                 timeout=30).json()
        spare_secret = post(session, "secrets", json={"note": "spare"}, headers=admin)
        spare_token = post(session, "tokens", json={"name": "spare", "role": "viewer"},
                           headers=admin)
        spare_user = post(session, "users", headers=admin, json={
            "username": "spare", "password": "a long password 1", "role": "viewer"})
        post(session, "connectors", headers=admin, json={
            "name": "fuzz", "kind": "jamf", "url": mdm_url, "client_id": MDM_CLIENT_ID,
            "secret": MDM_CLIENT_SECRET})
        exception = post(session, "exceptions", headers=admin, json={
            "app": "telegram", "host": spare_agent["agent_id"], "until": grant_until(),
            "reason": "fuzz"})
        post(session, "agent/events", headers={"Authorization": f"Bearer {agent['agent_token']}"},
             json={"events": [{"id": str(uuid.uuid4()), "type": "exception_requested",
                               "time": "2025-03-01T12:00:00Z",
                               "request": {"app": "telegram", "days": 3, "reason": "fuzz"}}]})
        requests_page = session.get(f"{base_url}/api/v1/exception-requests", headers=admin,
                                    timeout=30).json()
    return {"exception_id": exception["id"], "request_id": requests_page["items"][0]["id"],
            "host": agent["agent_id"],
            "finding_id": findings["items"][0]["id"],
            "violation_id": violations["items"][0]["id"], "agent_id": spare_agent["agent_id"],
            "number": 1, "app": "telegram", "secret_id": spare_secret["id"],
            "token_id": spare_token["id"], "user_id": spare_user["id"], "name": "fuzz"}


def issued_cursors(base_url: str, admin_token: str) -> dict[tuple[str, str, str], str]:
    """A real `next_cursor` of each list, and of findings for every order and direction."""
    asked = [("/api/v1/agents", "", ""), ("/api/v1/audit", "", "")]
    asked += [("/api/v1/findings", order, direction)
              for order in ("last_seen", "first_seen", "app", "host", "id")
              for direction in ("desc", "asc")]
    asked += [("/api/v1/violations", order, direction)
              for order in ("last_seen", "first_seen", "id") for direction in ("desc", "asc")]
    cursors = {}
    with requests.Session() as session:
        for path, order, direction in asked:
            params: dict[str, str | int] = {"limit": 1}
            if order:
                params |= {"order": order, "direction": direction}
            response = session.get(base_url + path, params=params, timeout=30,
                                   headers={"Authorization": f"Bearer {admin_token}"})
            assert response.status_code == 200, response.text
            cursors[(path, order, direction)] = response.json()["next_cursor"]
            assert cursors[(path, order, direction)], f"{path} has a single page"
    return cursors
