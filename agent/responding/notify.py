"""Telling the person at the machine that an app is not allowed, and what to use instead.

`notice_for` turns a finding into plain words; a `Notifier` shows them. The
OS-specific notifiers live in `agent.responding.notify_backends` and are chosen once by
`make_notifier`. `CooldownNotifier` wraps any of them so that a person who
keeps reopening Telegram is told once an hour, not every time.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.responding import notify_backends
from agent.responding.notify_backends import run_command
from agent.responding.notify_types import Notice, Notifier, NotifyResult, Runner
from policies.engine import Finding
from policies.vocabulary import OsName

log = logging.getLogger(__name__)

def notice_for(finding: Finding, bundle: Mapping[str, Any], os_name: OsName) -> Notice:
    """The notice for a finding, with the approved alternative's link and install steps."""
    apps: Mapping[str, Any] = bundle.get("apps", {})
    alt_id = finding.alternative
    alternative: Mapping[str, Any] = apps.get(alt_id, {}) if alt_id else {}
    alt_name = alternative.get("name", alt_id) if alt_id else None
    link = alternative.get("download_url") or alternative.get("homepage") or None
    hint = alternative.get("install_hints", {}).get(os_name) or None

    paragraphs = [
        finding.message.strip()
        or f"Your organisation does not allow {finding.app_name} on this device."
    ]
    if alt_name:
        paragraphs.append(f"Use {alt_name} instead: {link}" if link else f"Use {alt_name} instead.")
    if hint:
        paragraphs.append(hint.strip())
    evidence = finding.evidence
    user = evidence.get("username") or evidence.get("user") or None
    return Notice(
        title=f"{finding.app_name} is not allowed on this device",
        body="\n\n".join(paragraphs),
        app_id=finding.app,
        alternative_id=finding.alternative,
        alternative_name=alt_name,
        alternative_link=link,
        install_hint=hint,
        user=str(user) if user else None,
    )


@dataclass
class RecordingNotifier:
    """Keeps every notice; for tests and for `warden-agent watch`, which prints them."""

    notices: list[Notice] = field(default_factory=list)
    result: NotifyResult = field(
        default_factory=lambda: NotifyResult(ok=True, detail="recorded"))

    def notify(self, notice: Notice) -> NotifyResult:
        self.notices.append(notice)
        return self.result


class LogNotifier:
    """Writes notices to the log: for machines with nobody at a desktop (servers, CI)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

    def notify(self, notice: Notice) -> NotifyResult:
        self._log.warning("notice for %s: %s — %s", notice.user or "the user",
                          notice.title, notice.body)
        return NotifyResult(ok=True, detail="written to the agent log")


class CooldownNotifier:
    """At most one notice per (app, user) per cooldown; a failed notice does not count."""

    def __init__(
        self,
        inner: Notifier,
        cooldown_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._last_shown: dict[tuple[str, str | None], float] = {}
        # The scanner and the service loop may both act on findings.
        self._lock = threading.Lock()

    def notify(self, notice: Notice) -> NotifyResult:
        key = (notice.app_id, notice.user)
        with self._lock:
            now = self._clock()
            self._forget_before(now - self._cooldown)
            shown = self._last_shown.get(key)
            if shown is not None:
                ago = now - shown
                return NotifyResult(
                    ok=True, suppressed=True,
                    detail=f"not shown again: the same notice was shown {ago:.0f} s ago "
                           f"(cooldown {self._cooldown:.0f} s)")
        result = self._inner.notify(notice)
        if result.ok:
            with self._lock:
                self._last_shown[key] = self._clock()
        return result

    def _forget_before(self, horizon: float) -> None:
        for key in [key for key, shown in self._last_shown.items() if shown <= horizon]:
            del self._last_shown[key]


class CommandNotifier:
    """An organisation's own notifier (a tray app, a chat bot, a kiosk banner).

    Runs `command` with "--" and then the title, the body and the alternative's
    link as three more arguments, so a script can show them however the site
    prefers. The "--" tells the program that what follows are operands even when
    one starts with "-": policy text is data, never an option.
    """

    def __init__(self, command: Sequence[str], runner: Runner = subprocess.run) -> None:
        self.command = list(command)
        self._runner = runner

    def notify(self, notice: Notice) -> NotifyResult:
        ok, detail = run_command(self._runner, [*self.command, "--", notice.title,
                                                notice.body, notice.alternative_link or ""])
        return NotifyResult(ok, detail)


def make_notifier(os_name: OsName, runner: Runner = subprocess.run,
                  command: Sequence[str] = ()) -> Notifier:
    """The notifier: `command` when the settings name one, else the desktop's for this OS."""
    if command:
        return CommandNotifier(command, runner)
    if os_name == "linux":
        return notify_backends.LinuxNotifier(runner)
    if os_name == "macos":
        return notify_backends.MacNotifier(runner)
    if os_name == "windows":
        return notify_backends.WindowsNotifier(runner)
    raise ValueError(f"no notifier for OS {os_name!r}")


__all__ = ["Notice", "Notifier", "NotifyResult", "Runner", "make_notifier", "notice_for"]
