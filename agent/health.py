"""The agent watching its own footprint, as osquery's watchdog does.

An agent on every official machine must never be what slows it down. The
watchdog samples the agent's CPU and memory; CPU above the limit for several
samples in a row doubles a backoff factor (up to a ceiling) that the scanner
multiplies its intervals by, and healthy samples in a row halve it again.
Memory cannot be won back by scanning less, so RSS over its limit is flagged
for the report; the service manager's MemoryMax is the hard stop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

MiB = 1024 * 1024
# The niceness the agent asks for; the systemd unit and launchd plist set the same.
AGENT_NICENESS = 10


@dataclass(frozen=True)
class Sample:
    # Percent of one CPU core (100 = one core busy), like top and systemd's CPUQuota.
    cpu_percent: float
    rss_bytes: int


@dataclass(frozen=True)
class HealthState:
    cpu_percent: float
    rss_bytes: int
    over_limit: bool
    backoff_factor: float
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"cpu_percent": self.cpu_percent, "rss_bytes": self.rss_bytes,
                "over_limit": self.over_limit, "backoff_factor": self.backoff_factor,
                "detail": self.detail}


class ProcessSampler:
    """Samples one process (the agent, by default) with psutil."""

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid)
        # psutil measures CPU between two calls; the first one only starts the clock.
        self._process.cpu_percent(interval=None)

    def __call__(self) -> Sample:
        with self._process.oneshot():
            return Sample(self._process.cpu_percent(interval=None),
                          self._process.memory_info().rss)


class SelfWatchdog:
    """Call `check()` on a fixed tick; multiply scan intervals by its `backoff_factor`."""

    def __init__(
        self,
        cpu_limit_percent: float = 5.0,
        rss_limit_bytes: int = 150 * MiB,
        window: int = 3,
        max_backoff: float = 8.0,
        sampler: Callable[[], Sample] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least one sample")
        self.cpu_limit_percent = cpu_limit_percent
        self.rss_limit_bytes = rss_limit_bytes
        self.window = window
        self.max_backoff = max_backoff
        self._sampler = sampler or ProcessSampler()
        self._backoff = 1.0
        # Consecutive samples over / under the CPU limit: one spike is not a trend.
        self._hot = 0
        self._cool = 0

    @property
    def backoff_factor(self) -> float:
        return self._backoff

    def check(self) -> HealthState:
        sample = self._sampler()
        cpu_over = sample.cpu_percent > self.cpu_limit_percent
        rss_over = sample.rss_bytes > self.rss_limit_bytes
        if cpu_over:
            self._hot, self._cool = self._hot + 1, 0
            if self._hot >= self.window:
                self._backoff = min(self._backoff * 2, self.max_backoff)
                self._hot = 0
        else:
            self._hot, self._cool = 0, self._cool + 1
            if self._cool >= self.window and self._backoff > 1.0:
                self._backoff = max(self._backoff / 2, 1.0)
                self._cool = 0
        reasons = []
        if cpu_over:
            reasons.append(f"CPU {sample.cpu_percent:.1f}% over the "
                           f"{self.cpu_limit_percent:g}% limit")
        if rss_over:
            reasons.append(f"RSS {sample.rss_bytes / MiB:.0f} MiB over the "
                           f"{self.rss_limit_bytes / MiB:.0f} MiB limit")
        if self._backoff > 1.0:
            reasons.append(f"scanning {self._backoff:g}x less often")
        return HealthState(sample.cpu_percent, sample.rss_bytes, cpu_over or rss_over,
                           self._backoff, "; ".join(reasons))


def lower_priority() -> bool:
    """Run the agent niced (POSIX niceness 10, BELOW_NORMAL on Windows); best effort."""
    try:
        if os.name == "nt":
            psutil.Process().nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
            return True
        current = os.nice(0)
        if current < AGENT_NICENESS:
            os.nice(AGENT_NICENESS - current)
        return True
    except (OSError, psutil.Error):
        return False
