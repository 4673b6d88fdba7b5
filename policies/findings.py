"""What the engine judges for (HostContext) and what it answers (Finding)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from policies.network_index import VIA_DNS
from policies.vocabulary import Confidence, HostOsName, Sensor


@dataclass(frozen=True)
class HostContext:
    """Who is asking: decides scope and exceptions."""

    os: HostOsName = "linux"
    hostname: str = ""
    groups: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    today: dt.date = field(default_factory=dt.date.today)
    # Users' home folders as the agent found them (/etc/passwd). Those outside the
    # places `~` stands for (/home, /Users, C:/Users...) are matched by `~` too.
    homes: tuple[str, ...] = ()
    # Apps a signed exception lets this machine run now (policies.exceptions.in_force):
    # their findings are reported as `excepted`, never acted on.
    granted: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Finding:
    app: str
    app_name: str
    verdict: str
    action: str
    mode: str
    sensor: Sensor
    key: str
    evidence: dict[str, Any]
    alternative: str | None
    confidence: Confidence
    message: str
    matched: str  # which signature matched, e.g. "process.names: telegram-desktop"

    @property
    def named_by_dns(self) -> bool:
        """Matched only because DNS gave this address for a listed domain (maybe a CDN's)."""
        return self.sensor == "network" and self.matched.endswith(VIA_DNS)

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "app_name": self.app_name,
            "verdict": self.verdict,
            "action": self.action,
            "mode": self.mode,
            "sensor": self.sensor,
            "key": self.key,
            "evidence": self.evidence,
            "alternative": self.alternative,
            "confidence": self.confidence,
            "message": self.message,
            "matched": self.matched,
        }
