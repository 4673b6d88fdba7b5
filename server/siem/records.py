"""One thing worth telling a SIEM, before it is written in any SIEM's format.

A record is built once per change the server ingested (a finding opened or
resolved, an action an agent took, a sensor turning sick) and then written as
ECS JSON, CEF or a Splunk HEC event by the destinations that want it. The
severity scale is CEF's (0-10); ECS, syslog and HEC derive theirs from it, so a
record is equally urgent everywhere.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from server.alerts.summary import summary_text
from server.untrusted_text import one_line

RecordKind = Literal["finding_opened", "finding_resolved", "action", "sensor_problem"]
# What a destination subscribes to: alerts (a deny finding opened, a sensor turned sick),
# findings (every finding opened or resolved, whatever its verdict) and actions (what the
# agents did about them). A record in two streams is sent once.
Stream = Literal["alerts", "findings", "actions"]
STREAMS: tuple[Stream, ...] = get_args(Stream)
# Action outcomes: done, tried and failed, or not tried because the policy only audits.
ActionOutcome = Literal["success", "failure", "unknown"]

# uuid5 namespace for records without an agent event id (sensor problems): a retry of
# the same record carries the same id, so a SIEM can deduplicate at-least-once delivery.
_RECORD_NAMESPACE = uuid.UUID("6f1d7c52-4a55-4b7e-9a3e-2f0f3c1b9d10")

_OPENED_SEVERITY = {"deny": 8, "alert": 5, "allow": 1}
_SENSOR_SEVERITY = {"error": 7, "stalled": 5}


@dataclass(frozen=True)
class SiemRecord:
    kind: RecordKind
    # Stable across retries: the agent's event id where there is one.
    id: str
    time: dt.datetime
    streams: frozenset[Stream]
    # 0 (nothing to see) to 10 (act now), CEF's scale.
    severity: int
    # One human line, control characters escaped (server.untrusted_text).
    summary: str
    # The finding as the admin API shows it (`server.store.findings.as_dict` plus
    # `app_name`/`alternative_name`), or for a sensor problem the sensor alert.
    finding: Mapping[str, Any]
    # For an action: {"action", "ok", "detail", "outcome"}.
    action: Mapping[str, Any] | None = None
    # When the server stored it.
    ingested: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def outcome(self) -> ActionOutcome:
        if self.action is not None:
            outcome: ActionOutcome = self.action["outcome"]
            return outcome
        return "failure" if self.kind == "sensor_problem" else "success"

    @property
    def event_action(self) -> str:
        """`finding-opened`, `finding-resolved`, `notify`, `terminate`, `sensor-stalled`."""
        if self.action is not None:
            return str(self.action["action"])
        if self.kind == "sensor_problem":
            return f"sensor-{self.finding.get('state') or 'unknown'}"
        return self.kind.replace("_", "-")


def finding_record(
    kind: Literal["finding_opened", "finding_resolved"],
    finding: Mapping[str, Any],
    event_id: str | None,
    time: dt.datetime,
    app_names: Mapping[str, str] | None = None,
) -> SiemRecord:
    verdict = finding.get("verdict")
    opened = kind == "finding_opened"
    streams: set[Stream] = {"findings"}
    if opened and verdict == "deny":
        streams.add("alerts")
    severity = _OPENED_SEVERITY.get(str(verdict), 3) if opened else 1
    summary = summary_text(finding, app_names)
    if not opened:
        summary = f"resolved: {summary}"
    record_id = event_id or _derived_id(kind, finding.get("id"), time)
    return SiemRecord(kind=kind, id=record_id, time=time, streams=frozenset(streams),
                      severity=severity, summary=summary, finding=finding)


def action_record(
    finding: Mapping[str, Any],
    result: Mapping[str, Any],
    event_id: str,
    time: dt.datetime,
    app_names: Mapping[str, str] | None = None,
) -> SiemRecord:
    """An agent's action event; `result` is the wire `ActionResult` (action, ok, detail)."""
    outcome = action_outcome(result)
    name = str(result.get("action") or "unknown")
    detail = str(result.get("detail") or "")
    if outcome == "success":
        severity = 6 if name == "terminate" else 3
    elif outcome == "failure":
        # A user not told or an app not ended: someone should look.
        severity = 7
    else:
        severity = 2
    said = {"success": "done", "failure": "failed", "unknown": "not done"}[outcome]
    summary = one_line(f"{name} {said}{': ' + detail if detail else ''} — "
                       f"{summary_text(finding, app_names)}")
    action = {"action": name, "ok": bool(result.get("ok")), "detail": detail,
              "outcome": outcome}
    return SiemRecord(kind="action", id=event_id, time=time, streams=frozenset({"actions"}),
                      severity=severity, summary=summary, finding=finding, action=action)


def sensor_record(alert: Mapping[str, Any], time: dt.datetime) -> SiemRecord:
    """A sensor that turned stalled or error (server.api.agent's sensor alert)."""
    state = str(alert.get("state") or "")
    return SiemRecord(kind="sensor_problem", id=_derived_id("sensor", alert.get("id"), time),
                      time=time, streams=frozenset({"alerts"}),
                      severity=_SENSOR_SEVERITY.get(state, 5),
                      summary=summary_text(alert), finding=alert)


def action_outcome(result: Mapping[str, Any]) -> ActionOutcome:
    """success / failure / unknown; "unknown" is what audit mode would have done."""
    stated = result.get("outcome")
    if stated in ("success", "failure", "unknown"):
        return stated  # type: ignore[no-any-return]
    if result.get("ok"):
        return "success"
    # The agent says so in the detail when audit mode held it back (agent.responding).
    if str(result.get("detail") or "").startswith("audit mode"):
        return "unknown"
    return "failure"


def syslog_severity(severity: int) -> int:
    """The RFC 5424 severity (0 emergency .. 7 debug) for a 0-10 record severity."""
    if severity >= 9:
        return 2  # critical
    if severity >= 7:
        return 3  # error
    if severity >= 4:
        return 4  # warning
    if severity >= 1:
        return 5  # notice
    return 6  # informational


def _derived_id(kind: str, subject: object, time: dt.datetime) -> str:
    return str(uuid.uuid5(_RECORD_NAMESPACE, f"{kind}/{subject}/{time.isoformat()}"))
