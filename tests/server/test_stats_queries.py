"""The stats queries count what they say: UTC days to the microsecond, agents not findings.

They were rewritten for speed (bench/hotpaths.py); these pin their answers. Runs on
SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from server.db import utcnow
from server.models import Agent, Finding
from server.store import stats
from tests.server.admin_support import API, bearer, event, post_events, process

EnrolledAgent = Any


def test_findings_per_day_counts_utc_days_to_the_microsecond(
    client: TestClient, enroll: Callable[..., EnrolledAgent], admin_token: str
) -> None:
    agent = enroll(hostname="days")
    today = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(), dt.UTC)
    tick = dt.timedelta(microseconds=1)
    # Day edges: midnight itself counts to its day, a microsecond before to the day before;
    # the 30th day back is in, the 31st out.
    times = [today, today - tick, today - dt.timedelta(days=1), today - dt.timedelta(days=29),
             today - dt.timedelta(days=29) - tick, today - dt.timedelta(days=5, hours=-3)]
    post_events(client, agent.headers, *[event(process(n), time=at)
                                         for n, at in enumerate(times)])
    per_day = client.get(f"{API}/stats", headers=bearer(admin_token)).json()[
        "findings_per_day"]
    expected = Counter(at.date().isoformat() for at in times
                       if at >= today - dt.timedelta(days=29))
    assert len(per_day) == 30
    assert per_day[0]["day"] == (today - dt.timedelta(days=29)).date().isoformat()
    assert {item["day"]: item["opened"] for item in per_day if item["opened"]} == expected
    assert sum(item["opened"] for item in per_day) == len(times) - 1


def test_compliance_counts_agents_not_findings(
    client: TestClient, enroll: Callable[..., EnrolledAgent], admin_token: str
) -> None:
    many = enroll(hostname="many-denies")
    resolved = enroll(hostname="resolved-only")
    revoked = enroll(hostname="revoked")
    enroll(hostname="clean")
    post_events(client, many.headers, *[event(process(n)) for n in range(5)])
    post_events(client, resolved.headers, event(process(1)),
                event(process(1), "finding_resolved", dt.datetime(2025, 3, 2, tzinfo=dt.UTC)))
    post_events(client, revoked.headers, event(process(2)))
    answer = client.post(f"{API}/agents/{revoked.agent_id}/revoke",
                         headers=bearer(admin_token))
    assert answer.status_code == 200, answer.text
    stats = client.get(f"{API}/stats", headers=bearer(admin_token)).json()
    assert stats["compliance"]["with_open_deny"] == 1
    assert stats["compliance"]["compliant"] == stats["compliance"]["total"] - 1
    assert stats["compliance"]["total"] == 3


def test_fleet_counts_each_agent_once_by_its_state(db: Any) -> None:
    # One pass over the agents and one over the open deny findings must agree with the
    # definitions: revoked agents are out of compliance (even with an open deny finding or a
    # failed notification), a silent one counts by its last report, an alert or a resolved
    # finding is not an open deny.
    now = utcnow()
    fleet = [  # (hostname, last seen, revoked, notify error, findings as (verdict, status))
        ("denies", now, False, None, [("deny", "open"), ("deny", "open")]),
        ("silent-denies", now - dt.timedelta(days=2), False, "no display",
         [("deny", "open")]),
        ("revoked-denies", now, True, "no display", [("deny", "open")]),
        ("alerts", now, False, None, [("alert", "open"), ("deny", "resolved")]),
        ("clean", now, False, None, []),
    ]
    with db() as session:
        for index, (name, seen, revoked, error, rows) in enumerate(fleet):
            agent = Agent(id=str(uuid.uuid4()), hostname=name, machine_id=name, os="linux",
                          os_version="12", arch="x86_64", agent_version="0.1", user="u",
                          token_hash=uuid.uuid4().hex, last_seen=seen,
                          revoked_at=now if revoked else None, notify_error=error)
            session.add(agent)
            session.flush()
            for number, (verdict, status) in enumerate(rows):
                session.add(Finding(agent_id=agent.id, key=f"{index}|{number}", app="telegram",
                                    sensor="process", verdict=verdict, action="notify",
                                    status=status, first_seen=now, last_seen=now, count=1,
                                    evidence={}, message="", matched=""))
        session.commit()
        by_state, compliance = stats.fleet(session, now, dt.timedelta(minutes=5))
    assert by_state == {"active": 3, "silent": 1, "revoked": 1}
    assert compliance == {"compliant": 2, "with_open_deny": 2, "silent": 1, "total": 4,
                          "cannot_notify": 1}


def test_findings_per_day_over_shorter_windows_agrees_with_the_30_days(db: Any) -> None:
    # Each window length has a statement of its own (built once, then reused): a 1-day and a
    # 7-day window must be the tail of the 30-day one, midnights included, on both databases.
    now = utcnow()
    today = dt.datetime.combine(now.date(), dt.time(), dt.UTC)
    times = [today, today - dt.timedelta(microseconds=1), today - dt.timedelta(days=6),
             today - dt.timedelta(days=6, microseconds=1), today - dt.timedelta(days=20),
             today + dt.timedelta(seconds=1)]
    with db() as session:
        agent = Agent(id=str(uuid.uuid4()), hostname="windows", machine_id="windows",
                      os="linux", os_version="12", arch="x86_64", agent_version="0.1", user="u",
                      token_hash=uuid.uuid4().hex, last_seen=now)
        session.add(agent)
        session.flush()
        for number, at in enumerate(times):
            session.add(Finding(agent_id=agent.id, key=f"window|{number}", app="telegram",
                                sensor="process", verdict="deny", action="notify",
                                status="open", first_seen=at, last_seen=at, count=1,
                                evidence={}, message="", matched=""))
        session.commit()
        month = stats.findings_per_day(session, now, 30)
        week = stats.findings_per_day(session, now, 7)
        day = stats.findings_per_day(session, now, 1)
        assert stats.findings_per_day(session, now, 7) == week  # the reused statement
    assert week == month[-7:]
    assert day == month[-1:] == [{"day": today.date().isoformat(), "opened": 2}]
    assert sum(item["opened"] for item in week) == 4
    assert sum(item["opened"] for item in month) == 6
