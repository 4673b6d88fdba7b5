"""Failed attempts per key in a sliding window: the one shape of every rate limit here.

Both the dashboard login (server.dashboard.throttle) and enrollment count
failures, never successes, and check the count before the credential is
looked at: a refused attempt costs no hash and teaches nothing, and a burst of
good attempts (a whole site enrolling through one NAT) is never held back.

Kept in memory: on several server processes each has its own counters, which
only multiplies the allowance by the number of processes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

# Bounds the memory an attacker can make us spend on counters for made-up keys.
MAX_TRACKED_KEYS = 20_000


class FailureWindow:
    """When each key failed within the last `window_seconds`; a key with `limit` failures
    in the window waits until the oldest ages out."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_TRACKED_KEYS) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        # Routes run on FastAPI's thread pool: one lock keeps the dict and deques coherent.
        self._lock = threading.Lock()

    def retry_after(self, key: str, limit: int) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        now = self._clock()
        with self._lock:
            return self._wait(key, limit, now)

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            self._record(keys, now)

    def take(self, *limits: tuple[str, int]) -> float:
        """Count a failure for each `(key, limit)` now, before the credential is checked,
        unless a key is at its limit: then count nothing and answer the seconds to wait.

        Checking and counting in one step is what makes the limit hold for concurrent
        attempts: checked first and counted after a slow hash, twelve at once all pass.
        """
        now = self._clock()
        with self._lock:
            wait = max((self._wait(key, limit, now) for key, limit in limits), default=0.0)
            if wait <= 0:
                self._record([key for key, _ in limits], now)
            return wait

    def give_back(self, key: str) -> None:
        """Uncount the latest failure of `key` (taken for an attempt that did not fail)."""
        with self._lock:
            attempts = self._failures.get(key)
            if attempts:
                attempts.pop()
                if not attempts:
                    del self._failures[key]

    def _wait(self, key: str, limit: int, now: float) -> float:
        attempts = self._failures.get(key)
        if not attempts:
            return 0.0
        while attempts and now - attempts[0] >= self.window_seconds:
            attempts.popleft()
        if not attempts:
            del self._failures[key]
            return 0.0
        if len(attempts) < limit:
            return 0.0
        return self.window_seconds - (now - attempts[0])

    def _record(self, keys: Iterable[str], now: float) -> None:
        for key in keys:
            attempts = self._failures.pop(key, deque())
            attempts.append(now)
            # Re-inserted last, so the dict's order is oldest activity first.
            self._failures[key] = attempts
        while len(self._failures) > self._max_keys:
            del self._failures[next(iter(self._failures))]

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
