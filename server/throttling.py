"""Rate limits on failed attempts, shared by every server process through the database.

The one shape of every limit here: failures per key in a sliding window.
Dashboard logins (per account and per client address) and enrollments (per
client address) count failures, never successes, and count an attempt as
failed *before* its credential is checked, in the same transaction that checks
the limit: a refused attempt costs no hash and teaches nothing, twelve
attempts sent at once cannot all slip under a limit of five, and a burst of
good attempts (a whole site enrolling through one NAT) is never held back for
long, since a success gives its attempt back.

The counts live in the database (server.store.throttles), so N server
processes behind a load balancer allow what one process does: attempts
alternating between two processes reach the limit at the same count as on
one. Times are wall-clock (`time.time`): the processes share no other clock.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from server.store import throttles

log = logging.getLogger(__name__)

# Each scope has its own window; a key's rows never mix scopes.
ThrottleScope = Literal["login", "enroll"]
# A key's stored failures are trimmed to this many (the newest): limits are far below it.
MAX_FAILURES_PER_KEY = 1000
# The key column's width (server.models.ThrottleFailures.key).
MAX_KEY_LENGTH = 320
# Each process prunes a scope's aged-out rows at most this often, after an attempt.
PRUNE_EVERY_SECONDS = 60.0


class FailureWindow:
    """When each key failed within the last `window_seconds`, in the database; a key with
    `limit` failures in the window waits until the oldest ages out.

    `sessions` must open write sessions (server.db.writer): every decision locks rows.
    """

    def __init__(self, sessions: sessionmaker[Session], scope: ThrottleScope,
                 window_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.scope = scope
        self.window_seconds = window_seconds
        self._sessions = sessions
        self._clock = clock
        self._prune_lock = threading.Lock()
        self._last_prune = clock()

    def retry_after(self, key: str, limit: int) -> float:
        """Seconds until `key` may try again; 0 when it may now (a look: nothing counted)."""
        now = self._clock()
        with self._sessions() as session:
            return self._wait(self._recent(throttles.read(session, self.scope, key), now),
                              limit, now)

    def take(self, *limits: tuple[str, int]) -> float:
        """Count a failure for each `(key, limit)` now, before the credential is checked,
        unless a key is at its limit: then count nothing and answer the seconds to wait.

        Checking and counting in one transaction, on locked rows, is what makes the limit
        hold for concurrent attempts, in one process or many.
        """
        now = self._clock()
        with self._sessions() as session:
            held = throttles.lock(session, self.scope, (key for key, _ in limits))
            recent = {key: self._recent(times, now) for key, times in held.items()}
            wait = max((self._wait(recent[key], limit, now) for key, limit in limits),
                       default=0.0)
            if wait <= 0:
                for key, times in recent.items():
                    throttles.write(session, self.scope, key,
                                    [*times, now][-MAX_FAILURES_PER_KEY:])
            session.commit()
        self._maybe_prune(now)
        return wait

    def failed(self, *keys: str) -> None:
        """Count a failure for each key, whatever its count."""
        now = self._clock()
        with self._sessions() as session:
            for key, times in throttles.lock(session, self.scope, keys).items():
                throttles.write(session, self.scope, key,
                                [*self._recent(times, now), now][-MAX_FAILURES_PER_KEY:])
            session.commit()

    def give_back(self, key: str) -> None:
        """Uncount the latest failure of `key` (taken for an attempt that did not fail)."""
        now = self._clock()
        with self._sessions() as session:
            times = self._recent(throttles.lock(session, self.scope, [key])[key], now)
            if times:
                times.pop()
            if times:
                throttles.write(session, self.scope, key, times)
            else:
                throttles.delete(session, self.scope, key)
            session.commit()

    def forget(self, key: str) -> None:
        with self._sessions() as session:
            throttles.delete(session, self.scope, key)
            session.commit()

    def prune(self) -> int:
        """Delete the keys whose failures have all aged out; how many."""
        with self._sessions() as session:
            pruned = throttles.prune(session, self.scope,
                                     self._clock() - self.window_seconds)
            session.commit()
        return pruned

    def _maybe_prune(self, now: float) -> None:
        # Not under the lock's wait: a concurrent attempt skips, one prune is enough.
        if now - self._last_prune < PRUNE_EVERY_SECONDS or not self._prune_lock.acquire(
                blocking=False):
            return
        try:
            self._last_prune = now
            self.prune()
        except Exception:
            # The attempt was decided and committed; a failed prune is retried next time.
            log.exception("pruning %s throttle rows failed", self.scope)
        finally:
            self._prune_lock.release()

    def _recent(self, times: list[float], now: float) -> list[float]:
        return [at for at in times if now - at < self.window_seconds]

    def _wait(self, recent: list[float], limit: int, now: float) -> float:
        if len(recent) < limit:
            return 0.0
        return self.window_seconds - (now - recent[0])


# -- dashboard logins --------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottleLimits:
    per_account: int = 5
    per_address: int = 30
    window_seconds: float = 15 * 60


class LoginThrottle:
    """Login limits: few failed attempts per account and per client address.

    Two limits, because they stop different attacks: per account stops guessing
    one person's password from many addresses; per address stops one machine
    trying many accounts. A success clears the account's failures and gives
    back its address's attempt (not the address's other failures: a valid login
    must not launder an attacker's guesses at other accounts).
    """

    def __init__(self, sessions: sessionmaker[Session], limits: ThrottleLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or ThrottleLimits()
        self._failures = FailureWindow(sessions, "login", self.limits.window_seconds, clock)

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


def _account_key(account: str) -> str:
    return _bounded("account:" + account.strip().casefold())


def _address_key(address: str) -> str:
    return _bounded("address:" + address)


def _bounded(key: str) -> str:
    # A 255-character username can casefold to more than the column holds; a long key is
    # kept as its digest, which limits it just the same.
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return key.split(":", 1)[0] + ":sha256:" + hashlib.sha256(key.encode()).hexdigest()


# -- enrollments -------------------------------------------------------------------------


class EnrollThrottle:
    """Failed enrollments (unknown or revoked secret) per client address."""

    def __init__(self, sessions: sessionmaker[Session], per_address: int,
                 window_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.per_address = per_address
        self.failures = FailureWindow(sessions, "enroll", window_seconds, clock)

    def attempt(self, address: str) -> float:
        """Count this enrollment as failed before its secret is looked up; 0 if it may go
        on, else the seconds to wait (nothing counted)."""
        return self.failures.take((_address_key(address), self.per_address))

    def succeeded(self, address: str) -> None:
        """The secret was good: uncount the attempt."""
        self.failures.give_back(_address_key(address))
