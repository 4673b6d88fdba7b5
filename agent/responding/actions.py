"""What the agent does about a finding: tell the user, and in enforce mode end the app.

Each call returns the actions taken as events for the spool, so the server sees
both what happened and, in audit mode, what enforce mode would have done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.prevention.blocker import Blocked
from agent.responding.enforce import TerminateResult, terminate_tree
from agent.responding.notify import CooldownNotifier, Notifier, notice_for
from policies.engine import Finding
from policies.response import planned_actions
from policies.vocabulary import OsName

log = logging.getLogger("warden.agent.actions")

Terminate = Callable[[int, float | None], TerminateResult]


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
        events = self._handle(finding)
        for event in events:
            _log_outcome(event)
        return events

    def _handle(self, finding: Finding) -> list[dict[str, Any]]:
        events = []
        for plan in planned_actions(finding):
            if plan.action == "notify":
                events.append(self._notify(finding))
            elif plan.runs:
                events.append(self._enforce(finding))
            else:
                events.append(self._event(finding, plan.action, False, plan.reason))
        return events

    def blocked(self, blocked: Blocked) -> tuple[Finding, list[dict[str, Any]]]:
        """A blocked (or, in audit mode, would-be blocked) exec: tell the user, report it."""
        finding = dataclasses.replace(blocked.finding, evidence={
            "pid": blocked.pid, "name": blocked.path.rsplit("/", 1)[-1], "exe": blocked.path,
            **({"username": blocked.user} if blocked.user else {}),
            **({"sha256": blocked.sha256} if blocked.sha256 else {}),
        }, key=f"{blocked.finding.app}|process|exec:{blocked.path}")
        result = self._event(finding, "block", blocked.enforced, _block_detail(blocked))
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


def _block_detail(blocked: Blocked) -> str:
    if blocked.native:
        return (f"exec of {blocked.path} denied by {blocked.native}" if blocked.enforced
                else f"{blocked.native} in audit mode: would block")
    return (f"exec of {blocked.path} denied (EPERM)" if blocked.enforced
            else "audit mode: would block")


def _log_outcome(event: Mapping[str, Any]) -> None:
    """One log line per action, in the agent's log format: what it did to whom, or why not.

    A termination that happened, or was held back by audit mode, is INFO; a
    notification or termination that failed is a WARNING: someone reading the
    log must not take "notify" for "the user was told".
    """
    action, app, detail = event["action"], event["app"], event.get("detail") or ""
    pid = f" pid {event['pid']}" if event.get("pid") is not None else ""
    if event["ok"]:
        if event.get("suppressed"):
            log.debug("%s %s: not repeated (%s)", action, app, detail)
        elif action == "terminate":
            log.info("terminated %s%s: %s", app, pid, detail)
        else:
            log.info("notified the user about %s: %s", app, detail)
    elif event.get("mode") == "audit" and action == "terminate":
        log.info("would have terminated %s (audit mode): %s", app, detail)
    else:
        log.warning("%s %s failed: %s", action, app, detail)
