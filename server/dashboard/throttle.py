"""Login rate limit: few failed attempts per account and per client address.

Checked before the password is verified, so a refused attempt costs neither
an argon2 hash (CPU) nor a guess. Two limits, because they stop different
attacks: per account stops guessing one person's password from many
addresses; per address stops one machine trying many accounts. A success
clears the account's failures (not the address's: a valid login must not
launder an attacker's guesses at other accounts).

Kept in memory: on several server processes each has its own counters, which
only multiplies the allowance by the number of processes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Bounds the memory an attacker can make us spend on counters for made-up names.
MAX_TRACKED_KEYS = 20_000


@dataclass(frozen=True)
class ThrottleLimits:
    per_account: int = 5
    per_address: int = 30
    window_seconds: float = 15 * 60


class LoginThrottle:
    def __init__(self, limits: ThrottleLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or ThrottleLimits()
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, account: str, address: str) -> float:
        """Seconds until another attempt is allowed; 0 when it is allowed now."""
        now = self._clock()
        waits = [self._wait(self._account_key(account), self.limits.per_account, now),
                 self._wait(self._address_key(address), self.limits.per_address, now)]
        return max(waits)

    def failed(self, account: str, address: str) -> None:
        now = self._clock()
        for key in (self._account_key(account), self._address_key(address)):
            attempts = self._failures.pop(key, deque())
            attempts.append(now)
            # Re-inserted last, so the dict's order is oldest activity first (see _evict).
            self._failures[key] = attempts
        self._evict()

    def succeeded(self, account: str) -> None:
        self._failures.pop(self._account_key(account), None)

    def _wait(self, key: str, limit: int, now: float) -> float:
        attempts = self._failures.get(key)
        if not attempts:
            return 0.0
        window = self.limits.window_seconds
        while attempts and now - attempts[0] >= window:
            attempts.popleft()
        if not attempts:
            del self._failures[key]
            return 0.0
        if len(attempts) < limit:
            return 0.0
        return window - (now - attempts[0])

    def _evict(self) -> None:
        while len(self._failures) > MAX_TRACKED_KEYS:
            del self._failures[next(iter(self._failures))]

    @staticmethod
    def _account_key(account: str) -> str:
        return "account:" + account.strip().casefold()

    @staticmethod
    def _address_key(address: str) -> str:
        return "address:" + address
