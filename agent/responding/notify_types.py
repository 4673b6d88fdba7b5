"""What a notifier is given and what it answers: the types the chooser
(agent.responding.notify) and the OS backends (agent.responding.notify_backends)
share, so neither imports the other's module back."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# How backends run commands; `subprocess.run` in production, a recorder in tests.
Runner = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class Notice:
    """What the user is told, already in words; backends only lay it out."""

    title: str
    body: str
    app_id: str
    alternative_id: str | None
    alternative_name: str | None
    alternative_link: str | None
    install_hint: str | None
    # The account the finding belongs to (process owner, profile owner), when known.
    # The Linux backend tells that user's desktop; the cooldown counts per user.
    user: str | None = None


@dataclass(frozen=True)
class NotifyResult:
    ok: bool
    detail: str
    # True when the cooldown held the notice back: nothing failed, nothing was shown.
    suppressed: bool = False


class Notifier(Protocol):
    def notify(self, notice: Notice) -> NotifyResult: ...
