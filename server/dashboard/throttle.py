"""Login limits: few failed attempts per account and per client address, few hashes at once.

An attempt is counted as failed before the password is verified, in the same
step that checks the limit, so a refused attempt costs neither an argon2
hash (CPU, and 64 MiB of memory) nor a guess, and twelve attempts sent at
once cannot all slip under a limit of five. Two limits, because they stop
different attacks: per account stops guessing one person's password from
many addresses; per address stops one machine trying many accounts. A
success clears the account's failures and gives back its address's attempt
(not the address's other failures: a valid login must not launder an
attacker's guesses at other accounts). The counting itself is
server.throttle's, shared with enrollment.

Attempts within the limits still each cost a hash, and many addresses can
send them at once: `VerifySlots` lets only a few argon2 verifications run at
a time (each waits briefly for a slot, else the login answers 429), so the
server's memory stays flat under a burst of logins.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
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

    def attempt(self, account: str, address: str) -> float:
        """Count this attempt as failed, before its credential is checked; answer 0 if it
        may go on, or the seconds to wait (and nothing is counted)."""
        return self._failures.take((_account_key(account), self.limits.per_account),
                                   (_address_key(address), self.limits.per_address))

    def failed(self, account: str, address: str) -> None:
        self._failures.failed(_account_key(account), _address_key(address))

    def succeeded(self, account: str, address: str | None = None) -> None:
        """Clear the account's failures; with `address`, uncount the attempt `attempt`
        counted for it."""
        self._failures.forget(_account_key(account))
        if address is not None:
            self._failures.give_back(_address_key(address))

    def not_checked(self, account: str, address: str) -> None:
        """Uncount an attempt whose credential was never checked (no verify slot)."""
        self._failures.give_back(_account_key(account))
        self._failures.give_back(_address_key(address))


class VerifySlotsBusy(Exception):
    """Every verify slot stayed taken for the whole wait."""


class VerifySlots:
    """At most `slots` password verifications at a time; the others wait `wait_seconds`
    for a slot, then give up (VerifySlotsBusy).

    Counts what it did, for tests and benchmarks: `started` verifications in all,
    `peak` the most that ever ran at once.
    """

    def __init__(self, slots: int = 2, wait_seconds: float = 2.0) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self._free = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._running = 0
        self.started = 0
        self.peak = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for one verification (waiting for one if need be)."""
        if not self._free.acquire(timeout=self.wait_seconds):
            raise VerifySlotsBusy(f"all {self.slots} password verify slots stayed busy for "
                                  f"{self.wait_seconds:g} s")
        try:
            with self._lock:
                self._running += 1
                self.started += 1
                self.peak = max(self.peak, self._running)
            yield
        finally:
            with self._lock:
                self._running -= 1
            self._free.release()


def _account_key(account: str) -> str:
    return "account:" + account.strip().casefold()


def _address_key(address: str) -> str:
    return "address:" + address
