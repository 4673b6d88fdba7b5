"""What an agent does about a finding: the one rule, shared by the agent that acts on it
and by `warden policy test`, which says what the agent would really do.

The policy names an action (`report`, `notify`, `terminate`); what happens also depends
on the verdict, the mode, the sensor and how sure the match is. An installed copy or a
connection cannot be "terminated": the user is told, and the finding reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.engine import Finding
from policies.vocabulary import Action

# Verdicts that call for the rule's action; allow (and out_of_scope / excepted, which the
# engine only reports when asked) never act.
ACTING_VERDICTS = frozenset({"deny", "alert"})


@dataclass(frozen=True)
class PlannedAction:
    action: Action
    # False: the action is held back (audit mode, an alert verdict); `reason` says why.
    runs: bool
    reason: str = ""


def planned_actions(finding: Finding) -> list[PlannedAction]:
    """The actions the agent runs (or holds back) for `finding`, in order; [] if none."""
    if finding.verdict not in ACTING_VERDICTS or finding.action == "report":
        return []
    if finding.named_by_dns:
        # Named only by a DNS answer: the address may be a CDN's, shared with unrelated
        # sites. The finding goes to the server; the user is not told.
        return []
    plans = [PlannedAction("notify", True)]
    if finding.action not in ("terminate", "block") or finding.sensor != "process":
        # Only a running process can be ended; an installed copy or a connection is
        # reported and the user told. (`block` stops an exec where the agent can; a
        # process that ran anyway, through the loader or a copy, is ended like terminate.)
        return plans
    if finding.mode != "enforce":
        plans.append(PlannedAction("terminate", False, "audit mode: not terminated"))
    elif finding.verdict != "deny":
        plans.append(PlannedAction("terminate", False, f"verdict {finding.verdict}: only "
                                                      "denied apps are terminated"))
    else:
        plans.append(PlannedAction("terminate", True))
    return plans


def describe_response(finding: Finding) -> list[str]:
    """What the agent will really do, in words, one line per step."""
    plans = planned_actions(finding)
    if finding.verdict == "excepted":
        return ["nothing: an exception in the policy covers this machine, until it lapses"]
    if finding.verdict == "out_of_scope":
        return ["nothing: the policy's scope leaves this machine out"]
    if finding.verdict not in ACTING_VERDICTS:
        return ["nothing: the policy allows the app"]
    if not plans:
        if finding.action == "report":
            return ["reports the finding to the server; the user is not told"]
        return ["reports the finding; the user is not told (matched only by a DNS answer, "
                "which may be a shared address)"]
    lines = []
    for plan in plans:
        if plan.action == "notify":
            lines.append("notifies the user, and reports the finding")
        elif plan.runs:
            lines.append("terminates the process")
        else:
            lines.append(f"does not terminate it ({plan.reason}); enforce mode would")
    if finding.action in ("terminate", "block") and finding.sensor != "process":
        what = "an installed copy" if finding.sensor == "installed" else "a connection"
        lines.append(f"does not terminate anything: {what} is not a running process (the "
                     "process itself is ended when it runs)")
    return lines
