"""Login rate limit: few failed attempts per account and per client address.

Checked before the password is verified, so a refused attempt costs neither
an argon2 hash (CPU) nor a guess. Two limits, because they stop different
attacks: per account stops guessing one person's password from many
addresses; per address stops one machine trying many accounts. A success
clears the account's failures (not the address's: a valid login must not
launder an attacker's guesses at other accounts). The counting itself is
server.throttle's, shared with enrollment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from server.throttle import FailureWindow


@dataclass(frozen=True)
class ThrottleLimits:
    per_account: int = 5
    per_address: int = 30
    window_seconds: float = 15 * 60


class LoginThrottle:
    def __init__(self, limits: ThrottleLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or ThrottleLimits()
        self._failures = FailureWindow(self.limits.window_seconds, clock)

    def retry_after(self, account: str, address: str) -> float:
        """Seconds until another attempt is allowed; 0 when it is allowed now."""
        return max(self._failures.retry_after(_account_key(account), self.limits.per_account),
                   self._failures.retry_after(_address_key(address), self.limits.per_address))

    def failed(self, account: str, address: str) -> None:
        self._failures.failed(_account_key(account), _address_key(address))

    def succeeded(self, account: str) -> None:
        self._failures.forget(_account_key(account))


def _account_key(account: str) -> str:
    return "account:" + account.strip().casefold()


def _address_key(address: str) -> str:
    return "address:" + address
