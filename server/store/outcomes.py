"""What became of each action the agent ran on a finding, as the agent reported it.

An action event says `ok` and why; this module turns it into one of
`done`, `failed` or `would_have` (audit mode held the action back), keeps
the latest per action on the finding, and keeps on the agent why its latest
notification failed. Every view (pages, API, exports, alerts) reads outcomes
from here, so none of them says "notify" when nobody was told.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from policies.vocabulary import OutcomeState
from server.models import Agent

# An agent from before results carried their mode says so in the detail.
_AUDIT_DETAIL = "audit mode"
_LABELS: dict[str, str] = {"done": "done", "failed": "failed", "would_have": "would have"}


class HasOutcomes(Protocol):
    """A finding as ingest holds it (`findings.FindingState`): only its outcomes matter here."""

    outcomes: dict[str, Any] | None


def state_of(result: Mapping[str, Any]) -> OutcomeState:
    if result.get("ok") is True:
        return "done"
    # Audit mode holds back what enforces (terminate), never the notification: a
    # notification that failed in audit mode failed.
    held_back = result.get("mode") == "audit" or str(result.get("detail", "")).startswith(
        _AUDIT_DETAIL)
    if held_back and result.get("action") != "notify":
        return "would_have"
    return "failed"


def apply_action(row: HasOutcomes, agent: Agent, time: dt.datetime,
                 result: Mapping[str, Any]) -> None:
    """Record one action result on its finding (and, for a notification, its machine),
    unless a later result for the same action is already there (events arrive out of order)."""
    action = str(result.get("action", ""))
    state = state_of(result)
    detail = str(result.get("detail", ""))
    outcomes = dict(row.outcomes or {})
    known = outcomes.get(action)
    if not isinstance(known, dict) or str(known.get("time", "")) <= time.isoformat():
        outcomes[action] = {"state": state, "detail": detail, "time": time.isoformat()}
        # A new dict, so the ORM sees the JSON column change.
        row.outcomes = outcomes
    if action == "notify" and (agent.notify_checked_at is None
                               or agent.notify_checked_at <= time):
        agent.notify_checked_at = time
        agent.notify_error = None if state == "done" else detail or "notification failed"


def outcome_list(outcomes: Any) -> list[dict[str, str]]:
    """The stored outcomes as the API lists them: one per action, notify first."""
    if not isinstance(outcomes, dict):
        return []
    items = []
    for action in sorted(outcomes, key=lambda name: (name != "notify", name)):
        value = outcomes[action]
        if isinstance(value, dict) and value.get("state") in _LABELS:
            items.append({"action": str(action), "state": str(value["state"]),
                          "detail": str(value.get("detail", "")),
                          "time": str(value.get("time", ""))})
    return items


def outcome_text(action: str, outcomes: Any) -> str:
    """One line for people: 'notify: failed (notify-send not found); terminate: would have
    (audit mode: not terminated)', or what is still unknown."""
    items = outcome_list(outcomes)
    if not items:
        if action == "report":
            return "none: the policy only reports"
        return f"{action}: no result reported yet"
    parts = []
    for item in items:
        text = f"{item['action']}: {_LABELS[item['state']]}"
        if item["detail"] and item["state"] != "done":
            text += f" ({item['detail']})"
        parts.append(text)
    return "; ".join(parts)


def user_told(outcomes: Any) -> bool:
    """Whether the agent says its notification reached the user."""
    return any(item["action"] == "notify" and item["state"] == "done"
               for item in outcome_list(outcomes))
