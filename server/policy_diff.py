"""What changed between two policy versions: the rules, and the source line by line (shared
by the dashboard and `warden policy diff`).

The rule summary answers the question an administrator actually has ("does
this now deny WhatsApp?"); the source diff shows every edit, comments included.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

LineKind = Literal["context", "added", "removed"]
_RULE_FIELDS = ("verdict", "action", "alternative", "message", "exceptions")


@dataclass(frozen=True)
class DiffLine:
    kind: LineKind
    old_number: int | None
    new_number: int | None
    text: str


@dataclass
class Hunk:
    old_start: int
    new_start: int
    lines: list[DiffLine] = field(default_factory=list)

    @property
    def header(self) -> str:
        old_count = sum(1 for line in self.lines if line.kind != "added")
        new_count = sum(1 for line in self.lines if line.kind != "removed")
        return f"@@ -{self.old_start},{old_count} +{self.new_start},{new_count} @@"


@dataclass(frozen=True)
class RuleChange:
    app: str
    kind: Literal["added", "removed", "changed"]
    # (field, before, after) for each field that differs; all of them for added/removed.
    fields: list[tuple[str, Any, Any]]

    def before(self) -> list[tuple[str, Any]]:
        return [(name, old) for name, old, _ in self.fields if old not in (None, "", [])]

    def after(self) -> list[tuple[str, Any]]:
        return [(name, new) for name, _, new in self.fields if new not in (None, "", [])]


def source_diff(old: str, new: str, context: int = 3) -> list[Hunk]:
    """Hunks of a unified diff, with both sides' line numbers on every line."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    hunks = []
    for group in matcher.get_grouped_opcodes(context):
        hunk = Hunk(old_start=group[0][1] + 1, new_start=group[0][3] + 1)
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                hunk.lines.extend(DiffLine("context", i + 1, j + 1, old_lines[i])
                                  for i, j in zip(range(i1, i2), range(j1, j2), strict=True))
                continue
            hunk.lines.extend(DiffLine("removed", i + 1, None, old_lines[i])
                              for i in range(i1, i2))
            hunk.lines.extend(DiffLine("added", None, j + 1, new_lines[j])
                              for j in range(j1, j2))
        hunks.append(hunk)
    return hunks


def rule_changes(old_bundle: dict[str, Any], new_bundle: dict[str, Any]) -> list[RuleChange]:
    old_rules: dict[str, Any] = old_bundle.get("rules", {})
    new_rules: dict[str, Any] = new_bundle.get("rules", {})
    changes = []
    for app in sorted(old_rules.keys() | new_rules.keys()):
        before: dict[str, Any] | None = old_rules.get(app)
        after: dict[str, Any] | None = new_rules.get(app)
        if before is None:
            assert after is not None
            changes.append(RuleChange(app, "added",
                                      [(name, None, after.get(name)) for name in _RULE_FIELDS]))
        elif after is None:
            changes.append(RuleChange(app, "removed",
                                      [(name, before.get(name), None) for name in _RULE_FIELDS]))
        else:
            differing = [(name, before.get(name), after.get(name)) for name in _RULE_FIELDS
                         if before.get(name) != after.get(name)]
            if differing:
                changes.append(RuleChange(app, "changed", differing))
    return changes


def setting_changes(old_bundle: dict[str, Any],
                    new_bundle: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Policy-wide settings that differ: name, mode, scope, description."""
    old_policy: dict[str, Any] = old_bundle.get("policy", {})
    new_policy: dict[str, Any] = new_bundle.get("policy", {})
    return [(name, old_policy.get(name), new_policy.get(name))
            for name in ("name", "mode", "scope", "description")
            if old_policy.get(name) != new_policy.get(name)]
