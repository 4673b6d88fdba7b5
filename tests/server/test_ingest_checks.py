"""What an enrolled agent (or anyone) can send, and what the server does with it.

Evidence is checked per sensor at ingest; bodies nested too deeply are refused
before any authentication; unknown app ids are kept on their findings but counted
as `other` in /metrics and the stats. In process, real database, on SQLite and
(with WARDEN_TEST_DATABASE_URL) PostgreSQL.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from policies.evidence import CUT_MARK, PATH_CHARS
from server.api.bodies import MAX_JSON_DEPTH, json_too_deep
from server.models import Event, Finding
from tests.server.admin_support import (
    API,
    EVENTS,
    TELEGRAM_PROCESS,
    assert_error,
    event,
    post_events,
)
from tests.server.conftest import EnrolledAgent

CHECKIN = "/api/v1/agent/checkin"
DB = sessionmaker[Session]


def opened(app: str = "telegram", **evidence: Any) -> dict[str, Any]:
    """A finding_opened event for a process, with `evidence` instead of the engine's."""
    made = event(TELEGRAM_PROCESS)
    made["finding"] = {**made["finding"], "app": app,
                       "evidence": evidence or made["finding"]["evidence"]}
    return made


def stored(db: DB) -> tuple[int, int]:
    with db() as session:
        return (session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0,
                session.scalar(sa.select(sa.func.count()).select_from(Finding)) or 0)


# -- evidence --------------------------------------------------------------------------------


def test_evidence_of_the_wrong_type_is_refused_naming_the_field(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    batch = [event(TELEGRAM_PROCESS) for _ in range(3)] + [opened(pid=7, exe=123)]
    response = client.post(EVENTS, json={"events": batch}, headers=enrolled_agent.headers)
    error = assert_error(response, 422, "validation_error")
    assert [detail["field"] for detail in error["details"]] == [
        "events[3].finding.evidence.exe"]
    assert "string" in error["details"][0]["message"]
    assert stored(db) == (0, 0)  # nothing of the batch


@pytest.mark.parametrize("finding", [
    # Evidence that is not an object at all.
    {"evidence": ["pid", 7]},
    # A sensor's field with another sensor's type (no sensor named: every field is typed).
    {"sensor": None, "evidence": {"remote_port": "443"}},
    # An app id no catalog or policy could define.
    {"app": "Telegram Desktop!"},
    {"alternative": "../../signal"},
])
def test_other_malformed_findings_are_refused(
    client: TestClient, enrolled_agent: EnrolledAgent, finding: dict[str, Any]
) -> None:
    made = event(TELEGRAM_PROCESS, kind="finding_resolved")
    made["finding"] = {**made["finding"], **finding}
    response = client.post(EVENTS, json={"events": [made]}, headers=enrolled_agent.headers)
    error = assert_error(response, 422, "validation_error")
    assert all(detail["field"].startswith("events[0].finding.") for detail in error["details"])


def test_long_evidence_is_cut_and_unknown_keys_dropped(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    made = opened(pid=7, exe="/opt/" + "x" * 50_000, name="Telegram",
                  smuggled={"deep": [[["anything"]]]})
    post_events(client, enrolled_agent.headers, made)
    with db() as session:
        finding = session.scalars(sa.select(Finding)).one()
        payload = session.scalars(sa.select(Event.payload)).one()
    assert set(finding.evidence) == {"pid", "exe", "name"}
    assert len(finding.evidence["exe"]) == PATH_CHARS
    assert finding.evidence["exe"].endswith(CUT_MARK)
    # The event kept for the timeline holds the same checked evidence, not the raw one.
    assert payload["finding"]["evidence"] == finding.evidence


def test_nan_and_infinity_are_not_json(client: TestClient, enrolled_agent: EnrolledAgent) -> None:
    body = '{"status": {"cpu_percent": Infinity}}'
    response = client.post(CHECKIN, content=body, headers={
        **enrolled_agent.headers, "Content-Type": "application/json"})
    assert "Infinity" in assert_error(response, 422, "malformed")["message"]


# -- nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "headers"), [
    # The case: a stranger's check-in, before its token is looked at.
    (CHECKIN, {"Authorization": "Bearer wag_not-a-token"}),
    (CHECKIN, {}),
    (EVENTS, {"Authorization": "Bearer wag_not-a-token"}),
    # Routes whose bodies FastAPI parses itself.
    ("/api/v1/agent/enroll", {"Authorization": "Bearer wen_not-a-secret"}),
    (f"{API}/policies", {"Authorization": "Bearer wat_not-a-token"}),
])
def test_a_deeply_nested_body_is_refused_before_authentication(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = client.post(path, content=b"[" * 100_000,
                           headers={**headers, "Content-Type": "application/json"})
    error = assert_error(response, 422, "too_deep")
    assert str(MAX_JSON_DEPTH) in error["message"]


def test_a_deep_gzip_batch_is_refused_once_inflated(
    client: TestClient, enrolled_agent: EnrolledAgent
) -> None:
    body = gzip.compress(b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    response = client.post(EVENTS, content=body, headers={
        **enrolled_agent.headers, "Content-Type": "application/json",
        "Content-Encoding": "gzip"})
    assert_error(response, 422, "too_deep")


def test_nesting_up_to_the_limit_is_parsed(client: TestClient,
                                           enrolled_agent: EnrolledAgent) -> None:
    # Brackets inside strings nest nothing; an unknown key holds the deepest allowed value.
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    body = '{"note": "' + "[" * 500 + '", "extra": ' + deep + "}"
    response = client.post(CHECKIN, content=body, headers={
        **enrolled_agent.headers, "Content-Type": "application/json"})
    assert response.status_code == 200, response.text


# -- app ids ---------------------------------------------------------------------------------


def test_unknown_app_ids_are_kept_but_counted_as_other(
    client: TestClient, enroll: Callable[..., EnrolledAgent], admin_token: str, db: DB
) -> None:
    agent = enroll()
    made_up = [opened(app=f"made-up-{uuid.uuid4().hex[:8]}") for _ in range(20)]
    for index, item in enumerate(made_up):
        item["finding"]["key"] = f"{item['finding']['app']}|process|pid:{index}:1.00"
    post_events(client, agent.headers, event(TELEGRAM_PROCESS), *made_up)
    assert stored(db)[1] == 21  # every finding is kept, under the id it was sent with

    metrics = client.get("/metrics").text
    series = [line for line in metrics.splitlines() if line.startswith("warden_open_findings{")]
    assert series == ['warden_open_findings{app="other"} 20.0',
                      'warden_open_findings{app="telegram"} 1.0']
    stats = client.get(f"{API}/stats", headers={"Authorization": f"Bearer {admin_token}"})
    assert stats.json()["open_findings_by_app"] == {"other": 20, "telegram": 1}
    listed = client.get(f"{API}/findings", params={"app": made_up[0]["finding"]["app"]},
                        headers={"Authorization": f"Bearer {admin_token}"})
    assert len(listed.json()["items"]) == 1


def test_apps_a_stored_policy_defines_are_counted_by_name(
    client: TestClient, enrolled_agent: EnrolledAgent, admin_token: str
) -> None:
    policy = ("name: own-app\napps:\n  - id: inhouse-chat\n    name: In-house chat\n"
              "rules:\n  - app: inhouse-chat\n    verdict: alert\n")
    pushed = client.post(f"{API}/policies", content=policy.encode(), headers={
        "Authorization": f"Bearer {admin_token}", "Content-Type": "application/yaml"})
    assert pushed.status_code == 201, pushed.text
    post_events(client, enrolled_agent.headers, opened(app="inhouse-chat"))
    assert 'warden_open_findings{app="inhouse-chat"} 1.0' in client.get("/metrics").text


def test_nul_and_lone_surrogates_are_stored_as_replacement_characters(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    # A plist or registry value may hold them; PostgreSQL stores neither, UTF-8 has no
    # lone surrogate. A real pair (an emoji) is kept.
    made = opened(pid=7, name="Tele\u0000gram", exe="/opt/\ud800x/\U0001f600")
    body = json.dumps({"events": [made]})  # ASCII: every one of them as a \u escape
    response = client.post(EVENTS, content=body, headers={
        **enrolled_agent.headers, "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    with db() as session:
        evidence = session.scalars(sa.select(Finding.evidence)).one()
    assert evidence["name"] == "Tele\ufffdgram"
    assert evidence["exe"] == "/opt/\ufffdx/\U0001f600"


def test_a_gzip_batch_gets_the_same_replacements(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    body = gzip.compress(json.dumps({"events": [opened(pid=7, name="a\u0000b")]}).encode())
    response = client.post(EVENTS, content=body, headers={
        **enrolled_agent.headers, "Content-Type": "application/json",
        "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    with db() as session:
        assert session.scalars(sa.select(Finding.evidence)).one()["name"] == "a\ufffdb"


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


tricky_text = st.text(st.sampled_from('[]{}"\\ azü'), max_size=12)
nested = st.recursive(st.none() | st.integers() | tricky_text,
                      lambda children: st.lists(children, max_size=3)
                      | st.dictionaries(tricky_text, children, max_size=3), max_leaves=30)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(value=nested, limit=st.integers(0, 8), ascii_only=st.booleans())
def test_the_depth_scan_agrees_with_a_parse(value: Any, limit: int, ascii_only: bool) -> None:
    # Brackets, quotes and backslashes inside strings must not count; escapes must not fool it.
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_too_deep(body, limit) == (depth_of(value) > limit)
