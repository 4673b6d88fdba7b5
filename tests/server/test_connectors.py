"""MDM connectors end to end: the API adds one, a sync reads a stand-in of the vendor's API
over real HTTP on loopback, and phones become hosts with `mdm` findings (SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.connectors.runner import ConnectorRunner
from server.models import Connector
from server.settings import ServerSettings
from server.store import connectors
from tests.server.mdm_standins import (
    CLIENT_ID,
    CLIENT_SECRET,
    ENTERPRISE,
    TENANT,
    App,
    Device,
    StandIn,
    running,
)

TELEGRAM_IOS = App("Telegram Messenger", "ph.telegra.Telegraph", "Telegram FZ-LLC", "11.2")
TELEGRAM_X = App("Telegram X", "org.thunderdog.challegram", "Telegram FZ-LLC", "0.27")
NEKOGRAM = App("Nekogram", "tw.nekomimi.nekogram", "Nekogram", "11.5")
SIGNAL_IOS = App("Signal - Private Messenger", "org.whispersystems.signal", "Signal", "7.1")
NOTES = App("Notes", "com.example.notes", "Example", "1.0")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    # The server's own periodic syncs stay out of the way of the ones a test asks for.
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url,
                          connector_poll_seconds=3600)


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with running(StandIn(page_size=2)) as server:
        yield server


@pytest.fixture
def sleeps(app: FastAPI) -> list[float]:
    """Retry-After waits are recorded instead of slept: the tests check the value honoured."""
    waited: list[float] = []
    app.state.connector_runner.sleep = waited.append
    return waited


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _add(client: TestClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/api/v1/connectors", json=body, headers=_headers(token))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _intune(standin: StandIn, name: str = "corp") -> dict[str, Any]:
    return {"name": name, "kind": "intune", "tenant_id": TENANT, "client_id": CLIENT_ID,
            "secret": CLIENT_SECRET, "graph_url": standin.url, "login_url": standin.url}


def _sync(client: TestClient, token: str, name: str) -> Any:
    return client.post(f"/api/v1/connectors/{name}/sync", headers=_headers(token))


def _mdm_findings(client: TestClient, token: str) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/findings", params={"sensor": "mdm", "limit": 500},
                        headers=_headers(token))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def _phones(client: TestClient, token: str) -> dict[str, dict[str, Any]]:
    answer = client.get("/api/v1/agents", params={"limit": 500}, headers=_headers(token))
    assert answer.status_code == 200, answer.text
    return {a["hostname"]: a for a in answer.json()["items"] if a.get("source")}


def _fleet(standin: StandIn) -> None:
    standin.devices = [
        Device("d1", "alice-iphone", "iOS", apps=[TELEGRAM_IOS, NOTES, SIGNAL_IOS]),
        Device("d2", "bob-ipad", "iPadOS", model="iPad14,1", apps=[NOTES]),
        Device("d3", "carol-pixel", "Android", model="Pixel 8", apps=[TELEGRAM_X, NEKOGRAM]),
        Device("d4", "dave-laptop", "Windows", apps=[App("Telegram Desktop")]),
        Device("d5", "erin-iphone", "iOS", apps=[App("Telegram", None, "Telegram FZ-LLC")]),
    ]


def test_an_intune_sync_makes_phones_hosts_and_denied_apps_findings(
        client: TestClient, admin_token: str, standin: StandIn, sleeps: list[float]) -> None:
    _fleet(standin)
    record = _add(client, admin_token, _intune(standin))
    assert record["source"] == "intune:corp" and record["last_result"] is None

    answer = _sync(client, admin_token, "corp")
    assert answer.status_code == 200, answer.text
    counts = answer.json()
    # Four phones (the Windows machine is not one); Telegram on alice's and erin's iPhones,
    # Telegram X and Nekogram on carol's Pixel.
    assert counts["devices"] == 4
    assert counts["findings_opened"] == 4 and counts["findings_resolved"] == 0
    assert counts["apps"] == 7

    phones = _phones(client, admin_token)
    assert set(phones) == {"alice-iphone", "bob-ipad", "carol-pixel", "erin-iphone"}
    assert phones["bob-ipad"]["os"] == "ipados" and phones["carol-pixel"]["os"] == "android"
    assert {p["source"] for p in phones.values()} == {"intune:corp"}
    assert phones["alice-iphone"]["user"] == "alice@example.org"

    found = _mdm_findings(client, admin_token)
    by_host = {(f["host"], f["evidence"].get("display_name")): f for f in found}
    telegram = by_host[("alice-iphone", "Telegram Messenger")]
    assert telegram["app"] == "telegram" and telegram["verdict"] == "deny"
    assert telegram["status"] == "open" and telegram["alternative"] == "signal"
    assert telegram["evidence"] == {"connector": "corp", "device_id": "d1", "platform": "ios",
                                    "display_name": "Telegram Messenger",
                                    "publisher": "Telegram FZ-LLC", "version": "11.2"}
    assert ("carol-pixel", "Nekogram") in by_host and ("carol-pixel", "Telegram X") in by_host
    # Pages of two: several requests per list, each with the bearer token.
    assert standin.log.inventory_gets > 6

    # The same inventory again changes nothing: no finding opens twice.
    again = _sync(client, admin_token, "corp").json()
    assert (again["findings_opened"], again["findings_resolved"]) == (0, 0)
    assert len(_mdm_findings(client, admin_token)) == 4
    assert all(f["count"] == 1 for f in _mdm_findings(client, admin_token))

    # Alice removes Telegram; erin's phone leaves the MDM.
    standin.devices[0].apps = [NOTES, SIGNAL_IOS]
    del standin.devices[4]
    later = _sync(client, admin_token, "corp").json()
    assert later["findings_resolved"] == 1 and later["devices_retired"] == 1
    found = {(f["host"], f["evidence"].get("display_name")): f
             for f in _mdm_findings(client, admin_token)}
    assert found[("alice-iphone", "Telegram Messenger")]["status"] == "resolved"
    assert found[("erin-iphone", "Telegram")]["status"] == "open"  # retired, not judged
    phones = _phones(client, admin_token)
    assert phones["erin-iphone"]["retired_at"] is not None
    assert phones["alice-iphone"]["retired_at"] is None
    shown = client.get("/api/v1/connectors/corp", headers=_headers(admin_token)).json()
    assert shown["last_result"] == "ok" and shown["last_error"] is None
    assert shown["last_counts"]["findings_resolved"] == 1 and shown["hosts"] == 3
    assert sleeps == []


def test_intune_throttling_and_an_expired_token_are_survived(
        client: TestClient, admin_token: str, standin: StandIn, sleeps: list[float]) -> None:
    _fleet(standin)
    _add(client, admin_token, _intune(standin))
    standin.faults.throttle = 2
    standin.faults.retry_after = "7"
    standin.faults.status_503 = 1
    standin.faults.expire_after = 5  # the token dies mid-sync
    answer = _sync(client, admin_token, "corp")
    assert answer.status_code == 200, answer.text
    assert answer.json()["findings_opened"] == 4
    assert sleeps == [7.0, 7.0, 7.0]  # Retry-After honoured on each 429 and 503
    assert standin.log.tokens_issued == 2  # one refresh after the 401


@pytest.mark.parametrize("fault", ["fail_page", "malformed_page", "refuse_credentials",
                                   "unreachable", "plain_http", "throttled_forever"])
def test_a_failed_sync_changes_nothing_and_says_why(
        client: TestClient, admin_token: str, standin: StandIn, sleeps: list[float],
        fault: str) -> None:
    _fleet(standin)
    body = _intune(standin)
    if fault == "unreachable":
        body["graph_url"] = body["login_url"] = "http://127.0.0.1:9"
    if fault == "plain_http":
        body["graph_url"] = "http://graph.example.org"
    _add(client, admin_token, body)
    if fault not in ("unreachable", "plain_http"):
        first = _sync(client, admin_token, "corp")
        assert first.status_code == 200, first.text
    before = sorted((f["id"], f["status"]) for f in _mdm_findings(client, admin_token))
    hosts_before = _phones(client, admin_token)

    standin.devices[0].apps = [NOTES]  # would resolve a finding, if the sync completed
    standin.devices.append(Device("d9", "new-phone", "iOS", apps=[TELEGRAM_IOS]))
    standin.log.inventory_gets = 0
    if fault == "fail_page":
        standin.faults.fail_page = 3  # halfway through
    elif fault == "malformed_page":
        standin.faults.malformed_page = 2
    elif fault == "refuse_credentials":
        standin.faults.refuse_credentials = True
        standin.valid_tokens.clear()
    elif fault == "throttled_forever":
        standin.faults.throttle = 1000
        standin.faults.retry_after = "60"
    answer = _sync(client, admin_token, "corp")
    assert answer.status_code == 502, answer.text
    message = answer.json()["error"]["message"]
    expected = {"fail_page": "HTTP 500", "malformed_page": "malformed JSON",
                "refuse_credentials": "refused", "unreachable": "cannot reach",
                "plain_http": "not an https:// URL", "throttled_forever": "throttling"}[fault]
    assert expected in message and "changed nothing" in message
    assert CLIENT_SECRET not in message

    assert sorted((f["id"], f["status"]) for f in _mdm_findings(client, admin_token)) == before
    assert _phones(client, admin_token).keys() == hosts_before.keys()
    shown = client.get("/api/v1/connectors/corp", headers=_headers(admin_token)).json()
    assert shown["last_result"] == "failed" and expected in shown["last_error"]


def test_jamf_matches_bundle_ids_with_oauth_or_basic_auth(
        client: TestClient, admin_token: str, standin: StandIn) -> None:
    standin.devices = [
        Device("101", "ipad-7", "iOS", model="iPad Pro (11-inch)", apps=[TELEGRAM_IOS]),
        Device("102", "iphone-8", "iOS", apps=[NOTES, SIGNAL_IOS]),
        Device("103", "iphone-9", "iOS", apps=[App("Partisan", "org.cpartisans.ptelegram")]),
    ]
    for name, auth in (("jamf-oauth", "oauth"), ("jamf-basic", "basic")):
        _add(client, admin_token, {"name": name, "kind": "jamf", "url": standin.url,
                                   "client_id": CLIENT_ID, "secret": CLIENT_SECRET,
                                   "auth": auth})
        answer = _sync(client, admin_token, name)
        assert answer.status_code == 200, answer.text
        assert answer.json()["devices"] == 3 and answer.json()["findings_opened"] == 2
        assert answer.json()["apps"] == 4
    assert "POST /api/v1/auth/token" in standin.log.paths
    assert "POST /api/oauth/token" in standin.log.paths
    found = [f for f in _mdm_findings(client, admin_token)
             if f["evidence"]["connector"] == "jamf-oauth"]
    assert sorted(f["evidence"]["bundle_id"] for f in found) == [
        "org.cpartisans.ptelegram", "ph.telegra.Telegraph"]
    assert {f["confidence"] for f in found} == {"high"}
    phones = _phones(client, admin_token)
    assert phones["ipad-7"]["os"] == "ipados" and phones["iphone-8"]["os"] == "ios"


def test_android_uses_a_signed_jwt_and_says_when_reports_are_missing(
        client: TestClient, admin_token: str, standin: StandIn) -> None:
    standin.devices = [
        Device("a1", "p1", "Android", model="Pixel 7",
               apps=[App("Telegram", "org.telegram.messenger"), NOTES]),
        Device("a2", "p2", "Android", model="Pixel 8", apps=[App("Plus", "org.telegram.plus")]),
        Device("a3", "p3", "Android", model="Pixel 6", apps=[]),
    ]
    _add(client, admin_token, {"name": "fleet", "kind": "android", "enterprise": ENTERPRISE,
                               "secret": standin.service_account(), "api_url": standin.url})
    first = _sync(client, admin_token, "fleet").json()
    assert first["devices"] == 3 and first["findings_opened"] == 2
    assert any("application reports" in note for note in first["notes"])  # a3 sent none
    found = {f["evidence"]["package"]: f for f in _mdm_findings(client, admin_token)}
    assert set(found) == {"org.telegram.messenger", "org.telegram.plus"}
    assert found["org.telegram.plus"]["evidence"]["platform"] == "android"

    # a2 stops sending reports: its finding is left open, not resolved on no evidence.
    standin.devices[1].reports = False
    second = _sync(client, admin_token, "fleet").json()
    assert second["findings_resolved"] == 0
    assert {f["status"] for f in _mdm_findings(client, admin_token)} == {"open"}

    wrong = json.loads(standin.service_account())
    wrong["client_email"] = "someone@else.iam.gserviceaccount.com"
    _add(client, admin_token, {"name": "wrong", "kind": "android", "enterprise": ENTERPRISE,
                               "secret": json.dumps(wrong), "api_url": standin.url})
    failed = _sync(client, admin_token, "wrong")
    assert failed.status_code == 502 and "refused" in failed.json()["error"]["message"]


def test_secrets_are_sealed_and_never_answered(
        client: TestClient, admin_token: str, standin: StandIn,
        db: sessionmaker[Session], app: FastAPI) -> None:
    _fleet(standin)
    _add(client, admin_token, _intune(standin))
    answers = [client.get("/api/v1/connectors", headers=_headers(admin_token)).text,
               client.get("/api/v1/connectors/corp", headers=_headers(admin_token)).text,
               client.get("/api/v1/audit", headers=_headers(admin_token)).text]
    assert all(CLIENT_SECRET not in text for text in answers)
    with db() as session:
        row = connectors.get(session, "corp")
        assert isinstance(row, Connector) and CLIENT_SECRET not in row.secret
    key_file = app.state.context.settings.data_dir / "connector-secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_one_sync_at_a_time_across_processes(
        client: TestClient, admin_token: str, standin: StandIn,
        db: sessionmaker[Session]) -> None:
    _fleet(standin)
    _add(client, admin_token, _intune(standin))
    with db() as session:  # another server process holds the lease
        assert connectors.claim(session, "corp", "other-process")
        assert not connectors.claim(session, "corp", "third-process")
        session.commit()
    answer = _sync(client, admin_token, "corp")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "sync_running"
    assert standin.log.inventory_gets == 0


def test_bad_requests_change_nothing(client: TestClient, admin_token: str,
                                     api_token: Any) -> None:
    bad = [{"name": "x", "kind": "intune", "secret": "s"},  # no tenant_id / client_id
           {"name": "Bad Name", "kind": "jamf", "url": "https://j", "client_id": "c",
            "secret": "s"},
           {"name": "x", "kind": "blackberry", "secret": "s"}]
    for body in bad:
        answer = client.post("/api/v1/connectors", json=body, headers=_headers(admin_token))
        assert answer.status_code == 422, answer.text
    assert client.get("/api/v1/connectors",
                      headers=_headers(admin_token)).json()["items"] == []
    analyst = api_token("analyst")
    assert client.get("/api/v1/connectors", headers=_headers(analyst)).status_code == 403
    assert _sync(client, admin_token, "nothing").status_code == 404


def test_the_server_syncs_each_connector_on_its_interval(
        app: FastAPI, client: TestClient, admin_token: str, standin: StandIn) -> None:
    _fleet(standin)
    _add(client, admin_token, _intune(standin))
    # A second server process on the same database, polling often.
    other = ConnectorRunner(app.state.context, poll_seconds=0.05)
    other.start()
    try:
        deadline = time.monotonic() + 60
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            shown = client.get("/api/v1/connectors/corp", headers=_headers(admin_token)).json()
            if shown["last_result"]:
                break
            time.sleep(0.05)
    finally:
        other.shutdown()
    assert shown["last_result"] == "ok" and shown["last_counts"]["findings_opened"] == 4
    # Next one is an interval away: polling again does not sync again.
    assert other.run_due() == 0
    assert shown["next_sync_at"] > shown["last_sync_at"]
