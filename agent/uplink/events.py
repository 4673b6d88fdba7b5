"""What the agent sends about findings, built with the wire format's own models.

policies.wire is what the server checks every event against; building events
with the same classes means an event the agent spools is one the server takes.
"""

from __future__ import annotations

import uuid
from typing import Any

from agent.scanning.findings import format_time, utc_now
from policies.wire import (
    ACTION_DETAIL_CHARS,
    MATCHED_CHARS,
    MESSAGE_CHARS,
    ActionResult,
    AgentEvent,
    FindingInfo,
)

_WIRE_FINDING_FIELDS = tuple(FindingInfo.model_fields)


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
    }).model_dump(mode="json")


def action_event(finding: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What the agent did about a finding, as the agent API's AgentEvent."""
    return AgentEvent.model_validate({
        "id": uuid.uuid4(),
        "type": "action",
        "time": format_time(utc_now()),
        "finding": _wire_finding(finding),
        "result": ActionResult(action=result["action"], ok=bool(result["ok"]),
                               detail=str(result.get("detail", ""))[:ACTION_DETAIL_CHARS]),
    }).model_dump(mode="json")
