"""What one ingested batch changed, as the `on_findings_stream` hook hands it on.

One item per finding the batch opened (or reopened) or resolved — both, for one
opened and resolved within the batch — and per
action an agent reported, in the order the agent saw them:
``{"type", "event_id", "time", "finding", "result"}`` where `finding` is the
finding as the API shows it (plus display names) and `result` the action's
``{"action", "ok", "detail"}`` (None for finding changes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.models import Agent, Finding
from server.store import events

View = Callable[[Finding, Agent | None], dict[str, Any]]


def stream_items(
    session: Session, owner: Agent | None, result: events.IngestResult, view: View
) -> list[dict[str, Any]]:
    latest: dict[tuple[str, str], events.IncomingEvent] = {}
    for event in result.accepted_events:
        marker = (event.type, str(event.finding.get("key")))
        if marker not in latest or event.time >= latest[marker].time:
            latest[marker] = event
    items: list[dict[str, Any]] = []
    changes = (("finding_opened", [*result.opened, *result.opened_and_resolved]),
               ("finding_resolved", result.resolved))
    for kind, states in changes:
        for state in states:
            found = latest.get((kind, state.key))
            assert state.id is not None  # written, and loaded (`ingest(.., load_rows=True)`)
            items.append({"type": kind, "event_id": found.id if found else None,
                          "time": found.time if found else None,
                          "finding": view(result.rows[state.id], owner), "result": None})
    actions = [event for event in result.accepted_events if event.type == "action"]
    if actions and owner is not None:
        keys = sorted({str(event.finding.get("key")) for event in actions})
        by_key = {row.key: row for row in session.scalars(
            sa.select(Finding).where(Finding.agent_id == owner.id, Finding.key.in_(keys)))}
        for event in actions:
            acted_on = by_key.get(str(event.finding.get("key")))
            # A finding the server has not seen opened yet: what the action event says of it.
            finding = view(acted_on, owner) if acted_on is not None else {
                **event.finding, "id": None, "agent_id": owner.id, "host": owner.hostname,
                "group": owner.group}
            items.append({"type": "action", "event_id": event.id, "time": event.time,
                          "finding": finding, "result": event.payload.get("result") or {}})
    items.sort(key=lambda item: (item["time"] is None, item["time"] or 0))
    return items
