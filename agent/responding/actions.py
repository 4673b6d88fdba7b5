"""What the agent does about a finding: tell the user, and in enforce mode end the app.

Each call returns the actions taken as events for the spool, so the server sees
both what happened and, in audit mode, what enforce mode would have done.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.prevention.blocker import Blocked
from agent.responding.enforce import TerminateResult, terminate_tree
from agent.responding.notify import CooldownNotifier, Notifier, notice_for
from policies.engine import Finding
from policies.vocabulary import OsName

Terminate = Callable[[int, float | None], TerminateResult]

# Verdicts that call for the rule's action; allow (and out_of_scope / excepted,
# which the engine only reports when asked) never act.
_ACTING_VERDICTS = frozenset({"deny", "alert"})


class ActionRunner:
    """Runs a finding's action; `handle` returns the events to spool.

    The notifier is wrapped in a `CooldownNotifier` here, so every path that
    tells the user goes through the cooldown.
    """

    def __init__(
        self,
        notifier: Notifier,
        bundle_getter: Callable[[], Mapping[str, Any]],
        os_name: OsName,
        terminate: Terminate = terminate_tree,
        *,
        cooldown_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = CooldownNotifier(notifier, cooldown_seconds, clock)
        # A getter, not a bundle: the policy can be swapped while the agent runs.
        self._bundle_getter = bundle_getter
        self._os_name = os_name
        self._terminate = terminate

    def handle(self, finding: Finding) -> list[dict[str, Any]]:
        if finding.verdict not in _ACTING_VERDICTS or finding.action == "report":
            return []
        if finding.named_by_dns:
            # Named only by a DNS answer: the address may be a CDN's, shared with
            # unrelated sites. The finding goes to the server; the user is not told.
            return []
        events = [self._notify(finding)]
        if finding.action not in ("terminate", "block") or finding.sensor != "process":
            # Only a running process can be ended; an installed copy or a
            # connection is reported and the user told.
            return events
        if finding.mode != "enforce":
            events.append(self._event(finding, "terminate", False,
                                      "audit mode: not terminated"))
        elif finding.verdict != "deny":
            events.append(self._event(finding, "terminate", False,
                                      f"verdict {finding.verdict}: only denied apps are "
                                      "terminated"))
        else:
            events.append(self._enforce(finding))
        return events

    def blocked(self, blocked: Blocked) -> tuple[Finding, list[dict[str, Any]]]:
        """A blocked (or, in audit mode, would-be blocked) exec: tell the user, report it."""
        finding = dataclasses.replace(blocked.finding, evidence={
            "pid": blocked.pid, "name": blocked.path.rsplit("/", 1)[-1], "exe": blocked.path,
            **({"username": blocked.user} if blocked.user else {}),
            **({"sha256": blocked.sha256} if blocked.sha256 else {}),
        }, key=f"{blocked.finding.app}|process|exec:{blocked.path}")
        result = self._event(finding, "block", blocked.enforced,
                             f"exec of {blocked.path} denied (EPERM)" if blocked.enforced
                             else "audit mode: would block")
        result.update({"path": blocked.path, "sha256": blocked.sha256, "user": blocked.user,
                       "parent": blocked.parent})
        return finding, [self._notify(finding), result]

    def _notify(self, finding: Finding) -> dict[str, Any]:
        notice = notice_for(finding, self._bundle_getter(), self._os_name)
        result = self._notifier.notify(notice)
        event = self._event(finding, "notify", result.ok, result.detail)
        event["suppressed"] = result.suppressed
        return event

    def _enforce(self, finding: Finding) -> dict[str, Any]:
        pid = finding.evidence.get("pid")
        create_time = finding.evidence.get("create_time")
        if not isinstance(pid, int):
            return self._event(finding, "terminate", False, "no pid in the finding's evidence")
        if not isinstance(create_time, int | float) or not create_time:
            # Without a start time a reused pid could be someone else's process.
            return self._event(finding, "terminate", False,
                               f"no start time recorded for pid {pid}: not terminated, "
                               "to avoid ending a process that reused the pid")
        result = self._terminate(pid, float(create_time))
        event = self._event(finding, "terminate", result.ok, result.detail)
        event["pid"] = pid
        event["killed_pids"] = list(result.killed_pids)
        return event

    @staticmethod
    def _event(finding: Finding, action: str, ok: bool, detail: str) -> dict[str, Any]:
        return {"action": action, "ok": ok, "detail": detail, "app": finding.app,
                "key": finding.key, "mode": finding.mode, "sensor": finding.sensor}
