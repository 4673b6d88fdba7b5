"""The agent's own code speaks the wire format to a real server (policies.wire).

The agent builds its events and check-ins with the models the server validates
with, so what one side sends the other takes; and one event the server cannot
take never holds back the events behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from agent.uplink.client import AgentClient
from agent.uplink.events import action_event, to_server_event
from agent.uplink.spool import Spool
from agent.uplink.sync import SyncStatus
from agent.uplink.upload import Uploader
from policies.compiler import compile_bundle
from policies.engine import Engine
from policies.loader import default_policy_path, load_catalog, load_policy
from policies.observations import MAX_KEY_CHARS, InstalledObservation
from policies.wire import AgentStatus, CheckinRequest
from server.models import Event, Finding
from tests.server.conftest import EnrolledAgent


def _opened(key: str = "telegram|process|pid:4242:1.00", **changes: Any) -> dict[str, Any]:
    finding = {"key": key, "app": "telegram", "sensor": "process", "verdict": "deny",
               "action": "notify", "evidence": {"name": "Telegram", "pid": 4242},
               "alternative": "signal", "confidence": "high", "message": "Use Signal.",
               "matched": "process name Telegram"}
    return to_server_event({"event": "opened", "time": "2026-12-03T10:00:00.000+00:00",
                            **finding, **changes})


def _upload(live_server: str, agent: EnrolledAgent, tmp_path: Path,
            events: list[dict[str, Any]]) -> tuple[Spool, SyncStatus]:
    spool = Spool(tmp_path / "spool.db")
    for event in events:
        spool.append(event)
    status = SyncStatus()
    client = AgentClient(live_server, timeout=10)
    try:
        uploader = Uploader(client, spool, lambda: agent.token, status, batch_events=50)
        while uploader.upload_once():
            pass
    finally:
        client.close()
    return spool, status


def test_events_the_agent_builds_are_stored_as_sent(
    live_server: str, enrolled_agent: EnrolledAgent, tmp_path: Path,
    db: sessionmaker[Session],
) -> None:
    opened = _opened()
    acted = action_event(opened["finding"], {"action": "notify", "ok": False,
                                             "detail": "no notify-send on this machine"})
    spool, status = _upload(live_server, enrolled_agent, tmp_path, [opened, acted])
    assert spool.depth() == 0 and status.uploaded_events == 2 and status.refused_events == 0
    with db() as session:
        finding = session.scalars(sa.select(Finding)).one()
        assert (finding.app, finding.sensor, finding.verdict) == ("telegram", "process", "deny")
        types = sorted(session.scalars(sa.select(Event.type)))
    assert types == ["action", "finding_opened"]


def test_one_event_the_server_refuses_does_not_hold_back_the_rest(
    live_server: str, enrolled_agent: EnrolledAgent, tmp_path: Path,
    db: sessionmaker[Session],
) -> None:
    good = [_opened(key=f"telegram|process|pid:{pid}:1.00") for pid in range(5)]
    # What an older or broken agent might have spooled: no sensor on an opened finding.
    broken = {**good[0], "id": "0d6f2a3c-0000-4000-8000-000000000001",
              "finding": {**good[0]["finding"], "key": "telegram|x|1", "sensor": None}}
    spool, status = _upload(live_server, enrolled_agent, tmp_path, [*good[:2], broken,
                                                                   *good[2:]])
    assert spool.depth() == 0, "the refused event was let go, the others were stored"
    assert status.refused_events == 1
    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Finding)) == 5


def test_a_folder_with_a_very_long_path_is_still_reported(
    live_server: str, enrolled_agent: EnrolledAgent, tmp_path: Path,
    db: sessionmaker[Session],
) -> None:
    catalog = load_catalog()
    engine = Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog))
    # A user's own flatpak installation, deep down (a path can be 4 KiB).
    deep = "/home/alice/" + "/".join(["n" * 200] * 18) + "/flatpak/app/org.telegram.desktop"
    found = engine.evaluate(InstalledObservation(source="flatpak", id="org.telegram.desktop",
                                                 path=deep))
    assert found, "the catalog knows Telegram's flatpak"
    assert len(found[0].key) <= MAX_KEY_CHARS
    event = to_server_event({"event": "opened", "time": "2026-12-03T10:00:00.000+00:00",
                             **found[0].as_dict()})
    spool, status = _upload(live_server, enrolled_agent, tmp_path, [event])
    assert spool.depth() == 0 and status.refused_events == 0
    with db() as session:
        assert session.scalar(sa.select(Finding.key)) == found[0].key


def test_the_check_in_the_agent_builds_is_what_the_server_takes(
    live_server: str, enrolled_agent: EnrolledAgent,
) -> None:
    client = AgentClient(live_server, timeout=10)
    try:
        answer = client.checkin(enrolled_agent.token, CheckinRequest(
            policy_version=None, status=AgentStatus(spool_depth=3, policy_error="x" * 1024)))
    finally:
        client.close()
    assert answer.next_checkin_seconds > 0 and answer.policy_etag
