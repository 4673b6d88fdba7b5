"""Exponential backoff with full jitter, so a fleet that lost its server does not
come back in lock-step (the thundering herd the AWS architecture blog describes)."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float = 1.0, cap: float = 300.0,
                 rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self, server_hint: float | None = None) -> float:
        """The wait before the next try; a server's Retry-After is a floor."""
        self.failures += 1
        ceiling = min(self.cap, self.base * (2 ** min(self.failures - 1, 30)))
        delay = self._rng.uniform(ceiling / 2, ceiling)
        return max(delay, min(server_hint, self.cap)) if server_hint is not None else delay

    def reset(self) -> None:
        self.failures = 0
