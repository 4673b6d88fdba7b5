"""What the agent sends about findings, built with the wire format's own models.

policies.wire is what the server checks every event against; building events
with the same classes means an event the agent spools is one the server takes.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from agent.scanning.findings import format_time, utc_now
from policies.engine import Finding
from policies.wire import (
    ACTION_DETAIL_CHARS,
    MATCHED_CHARS,
    MESSAGE_CHARS,
    ActionResult,
    AgentEvent,
    FindingInfo,
)

_WIRE_FINDING_FIELDS = tuple(FindingInfo.model_fields)
_FINDING_FIELDS = [f.name for f in dataclasses.fields(Finding)]
# What a blocked exec was: the file, its hash, who ran it and from what.
_BLOCK_FIELDS = ("path", "sha256", "user", "parent")
SpoolItem = tuple[dict[str, Any], dict[str, Any] | None, str | None]


def _wire_finding(finding: dict[str, Any]) -> FindingInfo:
    fields = {name: finding.get(name) for name in _WIRE_FINDING_FIELDS}
    # A policy's message and a local rule's pattern have no length limit of their own;
    # the wire has one, and an event refused for it would hold back every event after it.
    for name, limit in (("message", MESSAGE_CHARS), ("matched", MATCHED_CHARS)):
        text = fields[name]
        if isinstance(text, str):
            fields[name] = text[:limit]
    return FindingInfo.model_validate(fields)


def to_server_event(event: dict[str, Any]) -> dict[str, Any]:
    """A scanner event (`{"event": "opened", ...finding}`) as the agent API's AgentEvent."""
    return AgentEvent.model_validate({
        "id": uuid.uuid4(),
        "type": "finding_opened" if event["event"] == "opened" else "finding_resolved",
        "time": event["time"],
        "finding": _wire_finding(event),
        # Re-judged under a new policy while still open: an update, not a new sighting.
        "restated": bool(event.get("restated")),
    }).model_dump(mode="json", exclude_defaults=True)


def action_event(finding: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What the agent did about a finding, as the agent API's AgentEvent."""
    return AgentEvent.model_validate({
        "id": uuid.uuid4(),
        "type": "action",
        "time": format_time(utc_now()),
        "finding": _wire_finding(finding),
        "result": ActionResult.model_validate({
            "action": result["action"], "ok": bool(result["ok"]),
            "detail": str(result.get("detail", ""))[:ACTION_DETAIL_CHARS],
            # The policy's mode when it ran: in audit, "not ok" is what enforce would have done.
            "mode": result.get("mode"),
            **{name: result[name] for name in _BLOCK_FIELDS if result.get(name)}}),
    }).model_dump(mode="json", exclude_none=True)


def finding_from_event(event: dict[str, Any]) -> Finding:
    return Finding(**{name: event[name] for name in _FINDING_FIELDS})


def blocked_exec_events(finding: Finding, results: list[dict[str, Any]]) -> list[SpoolItem]:
    """A blocked exec as the server sees it: a finding opened, its actions, and resolved.

    The program never ran (or, in audit mode, is judged by the process sensor on its
    own), so the finding closes at once; it keeps the attempt, with the `block` action
    (path, hash, user, parent) on its timeline, keyed by app and path: a second attempt
    reopens it.
    """
    now = format_time(utc_now())
    opened = to_server_event({"event": "opened", "time": now, **finding.as_dict()})
    resolved = to_server_event({"event": "resolved", "time": now, **finding.as_dict()})
    return [(opened, finding.as_dict(), None),
            *((action_event(finding.as_dict(), result), None, None) for result in results),
            (resolved, None, finding.key)]
