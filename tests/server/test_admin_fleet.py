"""`/api/v1/agents` and `/api/v1/stats`: state (active / silent / revoked), open findings,
policy currency, filters, pages, revocation, compliance and findings opened per day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.models import Agent
from server.store import audit
from tests.server.admin_support import (
    API,
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    WIDER_POLICY,
    assert_error,
    bearer,
    event,
    post_events,
    process,
)

EnrolledAgent = Any
DB = sessionmaker[Session]
CHECKIN = "/api/v1/agent/checkin"


def set_last_seen(db: DB, agent_id: str, when: dt.datetime) -> None:
    with db() as session:
        session.execute(sa.update(Agent).where(Agent.id == agent_id).values(last_seen=when))
        session.commit()


@pytest.fixture
def fleet(client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent],
          make_secret: Callable[..., str], db: DB) -> dict[str, EnrolledAgent]:
    """busy (active, current policy, two open findings and a resolved one), idle (silent,
    group lab, macOS) and gone (revoked, one open finding)."""
    busy = enroll(hostname="busy-pc", agent_version="0.2.0")
    idle = enroll(secret=make_secret(group="lab"), hostname="idle-mac", os="macos",
                  os_version="14.5")
    gone = enroll(hostname="gone-pc")
    etag = client.get("/api/v1/agent/policy", headers=busy.headers).headers["etag"].strip('"')
    status = {"spool_depth": 2, "open_findings": 2, "uptime_seconds": 60.0}
    assert client.post(CHECKIN, json={"policy_version": etag, "status": status},
                       headers=busy.headers).status_code == 200
    client.post(CHECKIN, json={"policy_version": "0" * 64}, headers=idle.headers)
    post_events(client, busy.headers, event(TELEGRAM_PROCESS), event(TELEGRAM_DEB),
                event(process(7)), event(process(7), "finding_resolved"))
    post_events(client, gone.headers, event(process(8)))
    # Not seen for an hour: well past 3 check-in intervals of 60 s.
    set_last_seen(db, idle.agent_id, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    revoked = client.post(f"{API}/agents/{gone.agent_id}/revoke", headers=bearer(admin_token))
    assert revoked.status_code == 200, revoked.text
    return {"busy": busy, "idle": idle, "gone": gone, "etag": etag}


def agents_list(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/agents", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_agents_list_state_versions_and_open_findings(
    client: TestClient, api_token: Callable[..., str], fleet: dict[str, Any]
) -> None:
    viewer = api_token("viewer")
    body = agents_list(client, viewer)
    assert body["next_cursor"] is None
    by_host = {item["hostname"]: item for item in body["items"]}
    assert list(by_host) == ["busy-pc", "gone-pc", "idle-mac"]  # hostname order
    busy = by_host["busy-pc"]
    assert (busy["id"], busy["state"], busy["open_findings"]) == (
        fleet["busy"].agent_id, "active", 2)
    assert (busy["os"], busy["os_version"], busy["agent_version"], busy["group"]) == (
        "linux", "Debian 12", "0.2.0", None)
    assert (busy["policy_version"], busy["policy_version_number"], busy["policy_current"]) == (
        fleet["etag"], 1, True)
    assert busy["status"] == {"spool_depth": 2, "open_findings": 2, "uptime_seconds": 60.0}
    assert abs(dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(busy["last_seen"])) < \
        dt.timedelta(minutes=1)
    idle = by_host["idle-mac"]
    assert (idle["state"], idle["group"], idle["os"], idle["open_findings"]) == (
        "silent", "lab", "macos", 0)
    assert (idle["policy_version_number"], idle["policy_current"]) == (None, False)
    gone = by_host["gone-pc"]
    assert (gone["state"], gone["open_findings"]) == ("revoked", 1)
    assert gone["revoked_at"] is not None


@pytest.mark.parametrize(("params", "hosts"), [
    ({"state": "active"}, ["busy-pc"]),
    ({"state": "silent"}, ["idle-mac"]),
    ({"state": "revoked"}, ["gone-pc"]),
    ({"group": "lab"}, ["idle-mac"]),
    ({"host": "*"}, ["busy-pc", "gone-pc", "idle-mac"]),
    ({"host": "BUSY-*"}, ["busy-pc"]),
    ({"os": "macos"}, ["idle-mac"]),
])
def test_agent_filters(client: TestClient, admin_token: str, fleet: dict[str, Any],
                       params: dict[str, str], hosts: list[str]) -> None:
    assert [item["hostname"] for item in agents_list(client, admin_token, **params)["items"]] \
        == hosts


def test_agent_pages_and_bad_parameters(client: TestClient, admin_token: str,
                                        fleet: dict[str, Any]) -> None:
    hosts, params = [], {"limit": 1}
    while True:
        body = agents_list(client, admin_token, **params)
        hosts += [item["hostname"] for item in body["items"]]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert hosts == ["busy-pc", "gone-pc", "idle-mac"]
    for query in ("state=asleep", "limit=0", "cursor=zzz", "colour=blue"):
        assert_error(client.get(f"{API}/agents?{query}", headers=bearer(admin_token)), 422)


def test_one_agent_and_revocation(
    client: TestClient, admin_token: str, fleet: dict[str, Any], db: DB
) -> None:
    busy = fleet["busy"]
    response = client.get(f"{API}/agents/{busy.agent_id}", headers=bearer(admin_token))
    assert response.status_code == 200
    assert (response.json()["hostname"], response.json()["state"]) == ("busy-pc", "active")
    assert_error(client.get(f"{API}/agents/no-such-agent", headers=bearer(admin_token)), 404)
    assert_error(client.post(f"{API}/agents/no-such-agent/revoke",
                             headers=bearer(admin_token)), 404)

    revoked = client.post(f"{API}/agents/{busy.agent_id}/revoke", headers=bearer(admin_token))
    assert revoked.status_code == 200
    assert revoked.json()["state"] == "revoked"
    # Its token stops working everywhere on the agent API.
    assert_error(client.post(CHECKIN, json={}, headers=busy.headers), 401)
    assert_error(client.get("/api/v1/agent/policy", headers=busy.headers), 401)
    with db() as session:
        entry = audit.list_entries(session, action="agent.revoke",
                                   target=f"agent:{busy.agent_id}")[0]
    assert entry.actor.endswith(":initial admin")
    assert entry.before is not None and entry.before["revoked_at"] is None
    assert entry.after is not None and entry.after["revoked_at"] is not None


def test_stats_count_agents_compliance_and_open_findings(
    client: TestClient, api_token: Callable[..., str], fleet: dict[str, Any]
) -> None:
    post_events(client, fleet["busy"].headers,
                event(process(9, "Discord"), policy=WIDER_POLICY))
    response = client.get(f"{API}/stats", headers=bearer(api_token("viewer")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agents"] == {"active": 1, "silent": 1, "revoked": 1}
    # Revoked agents are out of the count; the silent one has no open deny finding.
    assert body["compliance"] == {"compliant": 1, "with_open_deny": 1, "silent": 1, "total": 2,
                                  "cannot_notify": 0}
    assert body["open_findings_by_app"] == {"discord": 1, "telegram": 3}


def test_findings_per_day_covers_the_last_30_utc_days(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    today = dt.datetime.now(dt.UTC).date()

    def at(days_ago: int, hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime.combine(today - dt.timedelta(days=days_ago),
                                   dt.time(hour, minute), dt.UTC)

    post_events(client, enrolled_agent.headers,
                event(process(1), time=at(3, 0, 5)), event(process(2), time=at(3, 23, 55)),
                event(process(3), time=at(29, 12)), event(process(4), time=at(30, 23, 59)),
                event(process(5), time=at(45, 12)))
    # Seen again today: still opened on its first day.
    post_events(client, enrolled_agent.headers,
                event(process(1), time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)))
    days = client.get(f"{API}/stats", headers=bearer(admin_token)).json()["findings_per_day"]
    assert len(days) == 30
    assert days[-1]["day"] == today.isoformat()
    assert days[0]["day"] == (today - dt.timedelta(days=29)).isoformat()
    opened = {entry["day"]: entry["opened"] for entry in days}
    assert opened[(today - dt.timedelta(days=3)).isoformat()] == 2
    assert opened[(today - dt.timedelta(days=29)).isoformat()] == 1
    assert sum(opened.values()) == 3
