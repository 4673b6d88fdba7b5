"""`warden policy diff` and `warden policy impact` as readable tables, like the dashboard's.

The diff leads with what changed per rule (verdict, action, alternative, …) and in the
policy's settings (mode, scope), then shows the source hunks with both versions' line
numbers, so a context line is never read as belonging to the wrong rule.
"""

from __future__ import annotations

import json
from typing import Any

from server.cli.admin_output import cell, table
from server.policy_diff import rule_changes, setting_changes, source_diff
from server.schemas.policies import ImpactPreview, PolicyDetail

_MARKS = {"context": " ", "added": "+", "removed": "-"}


def diff_text(old: PolicyDetail, new: PolicyDetail) -> str:
    a, b = f"v{old.version_number}", f"v{new.version_number}"
    out: list[str] = []
    settings = setting_changes(old.bundle, new.bundle)
    if settings:
        out += ["Settings", _indent(table(settings, [
            ("SETTING", lambda s: s[0]), (a.upper(), lambda s: _value(s[1])),
            (b.upper(), lambda s: _value(s[2]))])), ""]
    changes = rule_changes(old.bundle, new.bundle)
    rows = [(change.app, change.kind, name, before, after)
            for change in changes for name, before, after in change.fields
            if change.kind == "changed" or (before or after) not in (None, "", [])]
    out.append("Rules")
    out.append(_indent(table(rows, [
        ("APP", lambda r: r[0]), ("CHANGE", lambda r: r[1]), ("FIELD", lambda r: r[2]),
        (a.upper(), lambda r: _value(r[3])), (b.upper(), lambda r: _value(r[4]))]))
        if rows else "  no rule changed")
    hunks = source_diff(old.source, new.source)
    out += ["", f"Source ({a} line, {b} line)"]
    if not hunks:
        out.append("  the sources are the same")
    for hunk in hunks:
        out.append(f"  {hunk.header}")
        for line in hunk.lines:
            old_no = "" if line.old_number is None else str(line.old_number)
            new_no = "" if line.new_number is None else str(line.new_number)
            out.append(f"  {old_no:>4} {new_no:>4} {_MARKS[line.kind]} {line.text}")
    return "\n".join(out)


def impact_text(impact: ImpactPreview) -> str:
    totals = impact.totals
    compared = (f"v{impact.active_version_number}" if impact.active_version_number
                else "no active version")
    out = [f"Impact of activating v{impact.version_number} (compared with {compared})",
           f"  hosts affected        {totals.agents_affected} of {totals.agents_evaluated}",
           f"  findings checked      {totals.findings_evaluated}"
           + (f" ({totals.unevaluable} could not be re-evaluated)" if totals.unevaluable
              else ""),
           f"  changes               {totals.changes}",
           f"  newly denied          {totals.newly_denied}",
           f"  no longer denied      {totals.no_longer_denied}",
           f"  agent response        {totals.response_changes} change(s), "
           f"{totals.newly_terminated} newly terminated", ""]
    if not impact.changes:
        out.append("No open finding would change verdict or handling.")
        return "\n".join(out)
    out.append(table(impact.changes, [
        ("HOST", lambda c: c.hostname), ("GROUP", lambda c: c.group),
        ("APP", lambda c: c.app), ("SENSOR", lambda c: c.sensor),
        ("NOW", lambda c: c.before), ("AFTER", lambda c: c.after),
        ("AGENT DOES NOW", lambda c: c.before_response),
        ("WOULD DO", lambda c: c.after_response),
        ("FINDING", lambda c: c.finding_id)]))
    if impact.truncated:
        out.append(f"(the first {len(impact.changes)} of {totals.changes} changes)")
    return "\n".join(out)


def _value(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(", ", ": "), sort_keys=True)
    return cell(value)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
