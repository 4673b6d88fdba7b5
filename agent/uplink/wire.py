"""The agent API's event shapes, built from what the scanner and the actions produce."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from agent.scanning.findings import format_time, utc_now
from policies.engine import Finding

_FINDING_FIELDS = [f.name for f in dataclasses.fields(Finding)]
_BLOCK_FIELDS = ("path", "sha256", "user", "parent")
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
                   "detail": str(result.get("detail", "")),
                   # What a blocked exec was: the file, its hash, who ran it and from what.
                   **{name: result[name] for name in _BLOCK_FIELDS if result.get(name)}},
    }


def finding_from_event(event: dict[str, Any]) -> Finding:
    return Finding(**{name: event[name] for name in _FINDING_FIELDS})


SpoolItem = tuple[dict[str, Any], dict[str, Any] | None, str | None]


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
