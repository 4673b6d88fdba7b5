"""The agent's events in the agent API's shape (server/api/agent_schemas.py, AgentEvent):
a scanner's finding event, an action's result, and back from the spool to a Finding."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from agent.scanning.findings import format_time, utc_now
from policies.engine import Finding

_FINDING_FIELDS = [f.name for f in dataclasses.fields(Finding)]
_SERVER_FINDING_FIELDS = ("key", "app", "verdict", "action", "sensor", "evidence",
                          "alternative", "confidence", "message", "matched")


def to_server_event(event: dict[str, Any]) -> dict[str, Any]:
    """A scanner event (`{"event": "opened", ...finding}`) in the agent API's shape."""
    return {
        "id": str(uuid.uuid4()),
        "type": "finding_opened" if event["event"] == "opened" else "finding_resolved",
        "time": event["time"],
        "finding": {name: event.get(name) for name in _SERVER_FINDING_FIELDS},
    }


def action_event(finding: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "action",
        "time": format_time(utc_now()),
        "finding": {name: finding.get(name) for name in _SERVER_FINDING_FIELDS},
        "result": {"action": result["action"], "ok": bool(result["ok"]),
                   "detail": str(result.get("detail", ""))},
    }


def finding_from_event(event: dict[str, Any]) -> Finding:
    return Finding(**{name: event[name] for name in _FINDING_FIELDS})
