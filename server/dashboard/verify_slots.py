"""At most a few password verifications at once, so a burst of logins keeps memory flat.

Each argon2 verification costs CPU and 64 MiB of memory. Attempts within the
login limits (server.throttling) still each cost one, and many addresses can
send them at once: `VerifySlots` lets only a few run at a time (each waits
briefly for a slot, else the login answers 429). This is a bound on one
process's own resources, so unlike the failure counts it stays in memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


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
