"""The one-line, human summary of a finding that every alert carries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.untrusted_text import one_line


def summary_text(finding: Mapping[str, Any], app_names: Mapping[str, str] | None = None) -> str:
    """One line, e.g. 'Telegram (deny) on host pc-7: process telegram-desktop pid 123 — use
    Signal instead'."""
    if finding.get("kind") == "sensor":
        return sensor_summary(finding)
    app = finding.get("app_name") or finding.get("app") or "unknown app"
    verdict = finding.get("verdict") or "?"
    host = finding.get("host") or finding.get("agent_id") or "unknown host"
    text = f"{app} ({verdict}) on host {host}: {describe_evidence(finding)}"
    alternative = finding.get("alternative")
    if alternative:
        names = app_names or {}
        name = finding.get("alternative_name") or names.get(alternative) or alternative.title()
        text += f" — use {name} instead"
    if finding.get("outcome"):
        # What the agent did, as it happened: a failed notification is not "user told".
        text += f" [{finding['outcome']}]"
    # Syslog and chat lines are single lines; evidence comes from the endpoint, and may
    # hold escape sequences and NULs meant for whoever reads the log.
    return one_line(text)


def sensor_summary(alert: Mapping[str, Any]) -> str:
    """One line, e.g. 'Warden agent on host pc-7: the installed sensor is stalled (a scan
    has been running for 75 s, past its 60 s deadline); last good scan 2025-03-04T05:06Z'."""
    host = alert.get("host") or alert.get("agent_id") or "unknown host"
    text = (f"Warden agent on host {host}: the {alert.get('sensor') or '?'} sensor is "
            f"{alert.get('state') or '?'}")
    if alert.get("detail"):
        text += f" ({alert['detail']})"
    text += f"; last good scan {alert.get('last_ok') or 'never'}"
    return " ".join(text.split())


def slack_text(finding: Mapping[str, Any], app_names: Mapping[str, str] | None = None) -> str:
    """The summary for a Slack-compatible webhook: an emoji and Slack's three escapes."""
    escaped = (summary_text(finding, app_names)
               .replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    emoji = ":warning:" if finding.get("kind") == "sensor" else ":no_entry:"
    return f"{emoji} {escaped}"


def describe_evidence(finding: Mapping[str, Any]) -> str:
    evidence = finding.get("evidence")
    if not isinstance(evidence, Mapping):
        evidence = {}
    sensor = finding.get("sensor") or "?"
    if sensor == "process":
        return _joined("process", evidence.get("name") or evidence.get("exe"),
                       _labelled("pid", evidence.get("pid")))
    if sensor == "installed":
        source = evidence.get("source")
        what = evidence.get("path") if source == "folder" else evidence.get("id")
        return _joined("installed", source, what)
    if sensor == "network":
        remote = evidence.get("remote_host") or evidence.get("remote_address")
        by = _joined("by process", evidence.get("process_name"),
                     _labelled("pid", evidence.get("pid")))
        return _joined("connection to", remote, by if by != "by process" else None)
    return f"{sensor} sensor"


def _labelled(label: str, value: object) -> str | None:
    return None if value is None else f"{label} {value}"


def _joined(*parts: object) -> str:
    return " ".join(str(part) for part in parts if part not in (None, ""))
