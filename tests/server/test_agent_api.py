"""The agent API end to end, through the in-process ASGI client (and a real uvicorn for races).

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.crypto.signing import verify_bundle
from server.models import Agent, EnrollSecret, Event, Finding
from server.store import agents, enroll_secrets
from server.store import findings as findings_store

# What the conftest's `enroll` factory returns (.agent_id, .token, .headers, ...).
EnrolledAgent = Any
Facts = Callable[..., dict[str, Any]]
DB = sessionmaker[Session]

ENROLL = "/api/v1/agent/enroll"
CHECKIN = "/api/v1/agent/checkin"
POLICY = "/api/v1/agent/policy"
EVENTS = "/api/v1/agent/events"
TELEGRAM_KEY = "telegram:process:/usr/bin/telegram-desktop"
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(
    kind: str = "finding_opened",
    key: str = TELEGRAM_KEY,
    time: dt.datetime = T0,
    app: str = "telegram",
    verdict: str = "deny",
    event_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()),
        "type": kind,
        "time": time.isoformat(),
        "finding": {"key": key, "app": app, "verdict": verdict, "action": "notify",
                    "sensor": "process", "evidence": {"pid": 4242, "exe": "/usr/bin/telegram"},
                    "alternative": "signal", "confidence": "high",
                    "message": "Telegram is not allowed", "matched": "process.names: telegram"},
    }
    if kind == "action":
        body["result"] = {"action": "notify", "ok": True, "detail": "notified alice"}
    return body


def count(db: DB, model: type[Any], *where: Any) -> int:
    with db() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


# -- enroll -------------------------------------------------------------------


def test_enroll_returns_identity_token_and_public_key(
    client: TestClient, enroll_secret: str, db: DB, host_facts: Facts
) -> None:
    facts = host_facts(hostname="desk-7")
    response = client.post(ENROLL, json=facts, headers=bearer(enroll_secret))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"agent_id", "agent_token", "policy_public_key", "group",
                         "key_rotations"}
    assert body["key_rotations"] == []  # the signing key was never rotated
    assert body["agent_token"].startswith("wag_")
    assert body["group"] is None
    with db() as session:
        agent = session.get(Agent, body["agent_id"])
    assert agent is not None and agent.hostname == "desk-7"
    # Only the hash is stored.
    assert agent.token_hash != body["agent_token"]
    assert body["agent_token"] not in agent.token_hash
    assert count(db, EnrollSecret, EnrollSecret.uses == 1) == 1


@pytest.mark.parametrize("authorization", [None, "Bearer wen_not-a-secret", "Basic abc",
                                           "Bearer "])
def test_enroll_refuses_missing_or_wrong_secret(
    client: TestClient, initialized: Any, authorization: str | None, db: DB,
    host_facts: Facts,
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post(ENROLL, json=host_facts(), headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert count(db, Agent) == 0


def test_enroll_refuses_a_revoked_secret(
    client: TestClient, enroll_secret: str, db: DB, host_facts: Facts
) -> None:
    with db() as session:
        row = enroll_secrets.find_usable(session, enroll_secret)
        assert row is not None
        enroll_secrets.revoke(session, row.id, actor="test")
        session.commit()
    assert_error(client.post(ENROLL, json=host_facts(), headers=bearer(enroll_secret)), 401)
    assert count(db, Agent) == 0


def test_enroll_with_a_group_secret_puts_the_agent_in_that_group(
    enroll: Callable[..., EnrolledAgent], make_secret: Callable[..., str], db: DB
) -> None:
    finance = enroll(secret=make_secret(group="finance"))
    plain = enroll()
    assert finance.group == "finance"
    assert plain.group is None
    with db() as session:
        row = session.get(Agent, finance.agent_id)
    assert row is not None and row.group == "finance"


def test_reenroll_keeps_the_id_and_rotates_the_token(
    client: TestClient, enroll: Callable[..., EnrolledAgent], make_secret: Callable[..., str]
) -> None:
    first = enroll(machine_id="machine-1", hostname="old-name")
    second = enroll(secret=make_secret(group="lab"), machine_id="machine-1",
                    hostname="new-name")
    assert second.agent_id == first.agent_id
    assert second.token != first.token
    assert second.group == "lab"
    assert_error(client.post(CHECKIN, json={}, headers=first.headers), 401)
    assert client.post(CHECKIN, json={}, headers=second.headers).status_code == 200


def test_a_revoked_machine_cannot_enroll_itself_back(
    client: TestClient, enrolled_agent: EnrolledAgent, enroll_secret: str, db: DB
) -> None:
    with db() as session:
        agents.revoke(session, enrolled_agent.agent_id, actor="test")
        session.commit()
    response = client.post(ENROLL, json=enrolled_agent.facts, headers=bearer(enroll_secret))
    assert_error(response, 403, "agent_revoked")
    assert_error(client.post(CHECKIN, json={}, headers=enrolled_agent.headers), 401)


@pytest.mark.parametrize(("field", "value"), [("os", "beos"), ("hostname", ""),
                                               ("machine_id", "x" * 300), ("arch", None)])
def test_enroll_validates_host_facts(
    client: TestClient, enroll_secret: str, field: str, value: Any, db: DB,
    host_facts: Facts,
) -> None:
    facts = host_facts()
    facts[field] = value
    error = assert_error(client.post(ENROLL, json=facts, headers=bearer(enroll_secret)), 422,
                         "validation_error")
    assert any(detail["loc"][-1] == field for detail in error["details"]), error
    assert count(db, Agent) == 0


# -- check-in and policy ------------------------------------------------------


def test_checkin_records_status_and_answers_etag_and_jittered_interval(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    status = {"spool_depth": 3, "dropped_events": 0, "open_findings": 1, "cpu_percent": 0.4,
              "rss_bytes": 31_000_000, "uptime_seconds": 3600}
    intervals = set()
    for _ in range(20):
        response = client.post(CHECKIN, json={"policy_version": "abc", "status": status},
                               headers=enrolled_agent.headers)
        assert response.status_code == 200, response.text
        intervals.add(response.json()["next_checkin_seconds"])
    etag = client.get(POLICY, headers=enrolled_agent.headers).headers["etag"]
    assert response.json()["policy_etag"] == etag.strip('"')
    # Default: 60 s ± 20 %, and not the same for everyone (jitter).
    assert all(48 <= interval <= 72 for interval in intervals)
    assert len(intervals) > 1
    with db() as session:
        agent = session.get(Agent, enrolled_agent.agent_id)
    assert agent is not None
    assert agent.policy_version == "abc"
    assert agent.status == status
    assert dt.datetime.now(dt.UTC) - agent.last_seen < dt.timedelta(minutes=1)


def test_checkin_rejects_an_admin_token_and_bad_status(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    assert_error(client.post(CHECKIN, json={}, headers=bearer(admin_token)), 401)
    error = assert_error(client.post(CHECKIN, json={"status": {"spool_depth": -1}},
                                     headers=enrolled_agent.headers), 422)
    assert error["details"][0]["field"] == "body.status.spool_depth"


def test_policy_is_signed_and_answers_304_when_current(
    client: TestClient, enrolled_agent: EnrolledAgent
) -> None:
    response = client.get(POLICY, headers=enrolled_agent.headers)
    assert response.status_code == 200
    body = response.json()
    etag = response.headers["etag"]
    assert etag == f'"{body["bundle"]["version"]}"'
    assert verify_bundle(enrolled_agent.public_key, body["bundle"], body["signature"])
    assert body["bundle"]["rules"]["telegram"]["verdict"] == "deny"

    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = client.get(POLICY, headers={**enrolled_agent.headers,
                                             "If-None-Match": if_none_match})
        assert cached.status_code == 304, if_none_match
        assert cached.content == b""
        assert cached.headers["etag"] == etag
    stale = client.get(POLICY, headers={**enrolled_agent.headers, "If-None-Match": '"old"'})
    assert stale.status_code == 200
    assert stale.json() == body


def test_policy_needs_an_agent_token(client: TestClient, admin_token: str) -> None:
    assert_error(client.get(POLICY), 401)
    assert_error(client.get(POLICY, headers=bearer(admin_token)), 401)


# -- events -------------------------------------------------------------------


def test_events_create_findings_and_a_retry_stores_nothing_twice(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    batch = {"events": [event(), event("action", time=T0 + dt.timedelta(seconds=1)),
                        event(key="telegram:installed:deb", time=T0)]}
    ids = [item["id"] for item in batch["events"]]
    first = client.post(EVENTS, json=batch, headers=enrolled_agent.headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": ids, "duplicates": []}
    again = client.post(EVENTS, json=batch, headers=enrolled_agent.headers)
    assert again.json() == {"accepted": [], "duplicates": ids}
    assert count(db, Event) == 3
    with db() as session:
        rows = session.scalars(sa.select(Finding).order_by(Finding.key)).all()
        # The action event sits on the finding's timeline.
        timeline = findings_store.timeline(session, rows[1])
    assert [(row.key, row.status, row.count) for row in rows] == [
        ("telegram:installed:deb", "open", 1), (TELEGRAM_KEY, "open", 1)]
    process = rows[1]
    assert process.agent_id == enrolled_agent.agent_id
    assert process.evidence == {"pid": 4242, "exe": "/usr/bin/telegram"}
    assert (process.verdict, process.action, process.alternative) == ("deny", "notify", "signal")
    assert process.triage == "new"
    assert [item.type for item in timeline] == ["finding_opened", "action"]
    assert timeline[1].payload["result"]["ok"] is True


def test_a_duplicate_inside_one_batch_is_stored_once(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    one = event()
    response = client.post(EVENTS, json={"events": [one, one]}, headers=enrolled_agent.headers)
    assert response.json() == {"accepted": [one["id"]], "duplicates": [one["id"]]}
    assert count(db, Event) == 1
    assert count(db, Finding, Finding.count == 1) == 1


def test_finding_lifecycle_resolve_reopen_and_late_events(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    def post(*events: dict[str, Any]) -> None:
        response = client.post(EVENTS, json={"events": list(events)},
                               headers=enrolled_agent.headers)
        assert response.status_code == 200, response.text

    def finding() -> Finding:
        with db() as session:
            return session.scalars(sa.select(Finding)).one()

    minute = dt.timedelta(minutes=1)
    post(event(time=T0))
    post(event("finding_resolved", time=T0 + 2 * minute))
    assert (finding().status, finding().resolved_at) == ("resolved", T0 + 2 * minute)
    post(event(time=T0 + 5 * minute))
    row = finding()
    assert (row.status, row.count, row.resolved_at) == ("open", 2, None)
    assert (row.first_seen, row.last_seen) == (T0, T0 + 5 * minute)
    # A resolve from before the latest sighting arrives late: the finding stays open.
    post(event("finding_resolved", time=T0 + 3 * minute))
    assert finding().status == "open"
    # An old sighting arriving late counts, but does not move last_seen back.
    post(event(time=T0 + minute))
    row = finding()
    assert (row.status, row.count, row.last_seen) == ("open", 3, T0 + 5 * minute)
    # Open and resolve in one batch, out of order: time decides.
    post(event("finding_resolved", time=T0 + 9 * minute), event(time=T0 + 8 * minute))
    row = finding()
    assert (row.status, row.count) == ("resolved", 4)


def test_events_land_under_the_token_owner_only(
    client: TestClient, enroll: Callable[..., EnrolledAgent], db: DB
) -> None:
    alice, bob = enroll(hostname="alice-pc"), enroll(hostname="bob-pc")
    alices = event()
    assert client.post(EVENTS, json={"events": [alices]},
                       headers=alice.headers).json()["accepted"] == [alices["id"]]
    # Bob replays Alice's event id with his own token: nothing of Alice's changes.
    forged = {**event(time=T0 + dt.timedelta(hours=1)), "id": alices["id"]}
    answer = client.post(EVENTS, json={"events": [forged, event(key="bob:key")]},
                         headers=bob.headers).json()
    assert answer["duplicates"] == [alices["id"]]
    with db() as session:
        stored = session.get(Event, alices["id"])
        by_agent = {key: agent_id for key, agent_id in session.execute(
            sa.select(Finding.key, Finding.agent_id))}
        alice_finding = session.scalars(sa.select(Finding).where(
            Finding.agent_id == alice.agent_id)).one()
    assert stored is not None and stored.agent_id == alice.agent_id
    assert by_agent == {TELEGRAM_KEY: alice.agent_id, "bob:key": bob.agent_id}
    assert alice_finding.count == 1


def test_gzip_batch_is_accepted(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    batch = {"events": [event(key=f"k{index}") for index in range(50)]}
    response = client.post(EVENTS, content=gzip.compress(json.dumps(batch).encode()),
                           headers={**enrolled_agent.headers, "Content-Encoding": "gzip",
                                    "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["accepted"]) == 50
    assert count(db, Finding) == 50


def test_oversized_bodies_are_refused_with_413_and_nothing_stored(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    padding = "x" * (1024 * 1024)
    big = json.dumps({"events": [event()], "padding": padding}).encode()
    assert_error(client.post(EVENTS, content=big, headers={
        **enrolled_agent.headers, "Content-Type": "application/json"}), 413,
        "payload_too_large")
    # Small on the wire, over the limit once decompressed (a gzip bomb).
    bomb = gzip.compress(big)
    assert len(bomb) < 64 * 1024
    assert_error(client.post(EVENTS, content=bomb, headers={
        **enrolled_agent.headers, "Content-Encoding": "gzip",
        "Content-Type": "application/json"}), 413, "payload_too_large")
    many = {"events": [event(key=f"k{index}") for index in range(1001)]}
    error = assert_error(client.post(EVENTS, content=gzip.compress(json.dumps(many).encode()),
                                     headers={**enrolled_agent.headers,
                                              "Content-Encoding": "gzip"}),
                         413, "too_many_events")
    assert error["details"] == [{"limit_events": 1000}]
    assert count(db, Event) == 0


def test_chunked_upload_over_the_limit_is_refused(
    client: TestClient, enrolled_agent: EnrolledAgent
) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 65536

    response = client.post(EVENTS, content=chunks(), headers=enrolled_agent.headers)
    assert_error(response, 413)


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", None),
    (b'{"events": "nope"}', "events"),
    (json.dumps({"events": [{**event(), "id": "not-a-uuid"}]}).encode(), "events[0].id"),
    (json.dumps({"events": [event(), {**event(), "time": "2025-03-01T12:00:00"}]}).encode(),
     "events[1].time"),
    (json.dumps({"events": [{**event(), "type": "finding_exploded"}]}).encode(),
     "events[0].type"),
    (json.dumps({"events": [{**event(), "finding": {"key": "k"}}]}).encode(), "events[0]"),
    (json.dumps({"events": [{**event("action"), "result": None}]}).encode(), "events[0]"),
])
def test_malformed_batches_get_422_and_store_nothing(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB,
    body: bytes, field: str | None,
) -> None:
    response = client.post(EVENTS, content=body, headers={
        **enrolled_agent.headers, "Content-Type": "application/json"})
    error = assert_error(response, 422)
    if field is not None:
        assert field in [detail["field"] for detail in error["details"]], error
    assert count(db, Event) == 0
    assert count(db, Finding) == 0


def test_bad_gzip_and_unknown_encodings_are_refused(
    client: TestClient, enrolled_agent: EnrolledAgent
) -> None:
    headers = {**enrolled_agent.headers, "Content-Type": "application/json"}
    assert_error(client.post(EVENTS, content=b"\x1f\x8bnot gzip",
                             headers={**headers, "Content-Encoding": "gzip"}), 422, "malformed")
    truncated = gzip.compress(json.dumps({"events": [event()]}).encode())[:-6]
    assert_error(client.post(EVENTS, content=truncated,
                             headers={**headers, "Content-Encoding": "gzip"}), 422, "malformed")
    assert_error(client.post(EVENTS, content=b"{}", headers={**headers,
                                                            "Content-Encoding": "br"}), 415)
    assert_error(client.post(EVENTS, content=b"{}", headers={
        **enrolled_agent.headers, "Content-Type": "text/plain"}), 415)


def test_an_unauthenticated_batch_is_refused_before_parsing(client: TestClient,
                                                             initialized: Any) -> None:
    assert_error(client.post(EVENTS, content=b"{not json"), 401)
    assert_error(client.post(EVENTS, json={"events": [event()]},
                             headers=bearer("wag_forged")), 401)


def test_revoked_agent_gets_401_everywhere(
    client: TestClient, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    with db() as session:
        agents.revoke(session, enrolled_agent.agent_id, actor="test")
        session.commit()
    headers = enrolled_agent.headers
    assert_error(client.post(CHECKIN, json={}, headers=headers), 401)
    assert_error(client.get(POLICY, headers=headers), 401)
    assert_error(client.post(EVENTS, json={"events": [event()]}, headers=headers), 401)
    assert count(db, Event) == 0


def test_deny_opened_hooks_run_after_commit_once_per_opening(
    app: FastAPI, client: TestClient, enrolled_agent: EnrolledAgent
) -> None:
    seen: list[dict[str, Any]] = []
    context = app.state.context

    def on_open(finding: dict[str, Any]) -> None:
        # Runs after commit: a fresh session already sees the finding.
        with context.read_sessions() as session:
            assert session.get(Finding, finding["id"]) is not None
        seen.append(finding)

    def broken(finding: dict[str, Any]) -> None:
        raise RuntimeError("a broken listener")

    context.hooks.on_deny_opened.extend([broken, on_open])
    opened = event()
    batch = [opened, event(key="signal:process", app="signal", verdict="allow")]
    assert client.post(EVENTS, json={"events": batch},
                       headers=enrolled_agent.headers).status_code == 200
    assert [(item["app"], item["host"], item["status"]) for item in seen] == [
        ("telegram", enrolled_agent.facts["hostname"], "open")]
    # A retry and a second sighting of an open finding are not new openings.
    client.post(EVENTS, json={"events": [opened, event(time=T0 + dt.timedelta(minutes=1))]},
                headers=enrolled_agent.headers)
    assert len(seen) == 1
    client.post(EVENTS, json={"events": [
        event("finding_resolved", time=T0 + dt.timedelta(minutes=2)),
        event(time=T0 + dt.timedelta(minutes=3))]}, headers=enrolled_agent.headers)
    assert len(seen) == 2


def post_concurrently(base_url: str, headers: dict[str, str],
                      batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POST each batch from its own thread and connection, all released at once."""
    barrier = threading.Barrier(len(batches))
    answers: list[dict[str, Any]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def send(batch: dict[str, Any]) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=60) as http:
                barrier.wait(timeout=30)
                response = http.post(EVENTS, json=batch, headers=headers)
                assert response.status_code == 200, response.text
                with lock:
                    answers.append(response.json())
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not failures, failures
    assert len(answers) == len(batches)
    return answers


def test_the_same_batch_sent_concurrently_is_stored_once(
    live_server: str, enrolled_agent: EnrolledAgent, app: FastAPI
) -> None:
    batch = {"events": [event(key=f"key-{index % 5}",
                              time=T0 + dt.timedelta(seconds=index)) for index in range(40)]}
    ids = [item["id"] for item in batch["events"]]
    answers = post_concurrently(live_server, enrolled_agent.headers, [batch] * 8)
    accepted = [event_id for answer in answers for event_id in answer["accepted"]]
    # Every event accepted by exactly one request; the others call it a duplicate.
    assert sorted(accepted) == sorted(ids)
    for answer in answers:
        assert sorted(answer["accepted"] + answer["duplicates"]) == sorted(ids)
    db = app.state.context.read_sessions
    assert count(db, Event) == 40
    with db() as session:
        rows = session.scalars(sa.select(Finding)).all()
    # 5 keys opened 8 times each, counted once each.
    assert sorted((row.key, row.count) for row in rows) == [(f"key-{index}", 8)
                                                            for index in range(5)]


def test_different_batches_opening_the_same_findings_concurrently(
    live_server: str, enrolled_agent: EnrolledAgent, app: FastAPI
) -> None:
    # Each batch opens the same new findings, in a different order: they race to create them.
    keys = [f"key-{index}" for index in range(6)]
    batches = [{"events": [event(key=key, time=T0 + dt.timedelta(seconds=sender))
                           for key in (keys if sender % 2 else reversed(keys))]}
               for sender in range(8)]
    answers = post_concurrently(live_server, enrolled_agent.headers, batches)
    assert all(len(answer["accepted"]) == len(keys) for answer in answers)
    db = app.state.context.read_sessions
    assert count(db, Event) == 48
    with db() as session:
        rows = session.scalars(sa.select(Finding)).all()
    assert sorted((row.key, row.count, row.last_seen) for row in rows) == [
        (key, 8, T0 + dt.timedelta(seconds=7)) for key in keys]


# -- errors and health --------------------------------------------------------


def test_every_error_is_json(app: FastAPI, enrolled_agent: EnrolledAgent,
                             client: TestClient) -> None:
    assert_error(client.get("/api/v1/agent/nope"), 404, "not_found")
    assert_error(client.get(EVENTS, headers=enrolled_agent.headers), 405, "method_not_allowed")

    def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/test-explode", explode)
    with TestClient(app, raise_server_exceptions=False) as quiet:
        error = assert_error(quiet.get("/test-explode"), 500, "internal_error")
    assert "boom" not in error["message"]


def test_healthz_answers_when_the_database_does(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_documents_the_agent_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (ENROLL, CHECKIN, POLICY, EVENTS):
        assert path in paths
