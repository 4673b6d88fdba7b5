"""One destination's queue and its worker thread: ingest never waits, an outage loses
nothing that fits the queue.

`submit` appends to a bounded in-memory queue and returns at once. The worker
sends up to `batch_size` records at a time; while the destination is down it
retries the same batch, backing off (doubling, capped, jittered), for as long
as it takes. Meanwhile records queue up; when the queue is full the OLDEST is
dropped to make room (the latest state of the fleet matters most), counted and
logged. A record the destination refuses outright (HTTP 400) is dropped as
`failed`. Delivery is at least once: a batch cut off mid-way is sent again, and
each record's id (ECS event.id, CEF externalId) lets the SIEM deduplicate.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from typing import Literal

from server.alerts.delivery import DeliveryError, RetryableError
from server.siem.records import SiemRecord
from server.siem.senders import BatchSender

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "failed", "dropped"]
# Called with (destination, outcome, how many records).
OutcomeHook = Callable[[str, Outcome, int], None]


class Outbox:
    def __init__(
        self,
        name: str,
        sender: BatchSender,
        *,
        queue_size: int = 10_000,
        batch_size: int = 100,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        on_outcome: OutcomeHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        self.name = name
        self.sender = sender
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()
        self._pending: deque[SiemRecord] = deque()
        self._changed = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self._interrupt = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        # The last delivery error, for the log and the tests; None once delivery works.
        self.last_error: str | None = None

    def submit(self, record: SiemRecord) -> None:
        """Queue one record; never blocks, never raises."""
        with self._changed:
            if self._closing:
                self._count_dropped(1, "the server is stopping")
                return
            if len(self._pending) >= self.queue_size:
                self._pending.popleft()
                self._count_dropped(1, f"queue full ({self.queue_size}); oldest record dropped")
            self._pending.append(record)
            self._changed.notify_all()

    @property
    def queued(self) -> int:
        with self._changed:
            return len(self._pending) + self._in_flight

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"SIEM outbox {self.name} was already started")
        self._thread = threading.Thread(target=self._run, name=f"warden-siem-{self.name}",
                                        daemon=True)
        self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued was delivered or given up; False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._pending and not self._in_flight, timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Refuse new records, send what is queued while the destination answers (one
        attempt per batch), and count what is left as dropped. False if the worker was
        still busy when `timeout` ran out."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._interrupt.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        with self._changed:
            lost = len(self._pending)
            self._pending.clear()
            if lost:
                self._count_dropped(lost, "the server stopped before they were sent")
        if stopped:
            self.sender.close()
        return stopped

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            outcome = self._deliver(batch)
            with self._changed:
                self._in_flight = 0
                if outcome == "delivered":
                    self.delivered += len(batch)
                elif outcome == "failed":
                    self.failed += len(batch)
                else:
                    # Stopping with the destination down: back in line for stop() to count.
                    self._pending.extendleft(reversed(batch))
                self._changed.notify_all()
            if outcome == "requeued":
                return
            self._report(outcome, len(batch))

    def _next_batch(self) -> list[SiemRecord] | None:
        with self._changed:
            self._changed.wait_for(lambda: bool(self._pending) or self._closing)
            if not self._pending:
                return None
            count = min(self.batch_size, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            self._in_flight = count
            return batch

    def _deliver(self, batch: list[SiemRecord]) -> Literal["delivered", "failed", "requeued"]:
        try:
            # Rendered once: an outage's retries resend these bytes and cost no CPU.
            prepared = self.sender.prepare(batch)
        except Exception:
            # A bug in rendering one record must not end the worker and silence the rest.
            log.exception("SIEM %s: rendering %d record(s) failed", self.name, len(batch))
            return "failed"
        attempt = 0
        while True:
            attempt += 1
            try:
                self.sender.transmit(prepared)
                if self.last_error is not None:
                    log.info("SIEM %s: delivering again after %d attempt(s)", self.name,
                             attempt)
                self.last_error = None
                return "delivered"
            except RetryableError as exc:
                self.last_error = str(exc)
                if self._interrupt.is_set():
                    return "requeued"
                delay = self.backoff(attempt)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.backoff_cap))
                # The first failure and then one line per ten: an outage must not flood the log.
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("SIEM %s unreachable (%s); %d record(s) waiting, retry %d in "
                                "%.1fs", self.name, exc, self.queued, attempt, delay)
                self._interrupt.wait(delay)
            except DeliveryError as exc:
                self.last_error = str(exc)
                log.error("SIEM %s refused %d record(s), not retried: %s", self.name,
                          len(batch), exc)
                return "failed"
            except Exception:
                log.exception("SIEM %s: sending %d record(s) failed", self.name, len(batch))
                return "failed"

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _count_dropped(self, count: int, reason: str) -> None:
        # Called with the lock held; the hook only counts, it does not call back in.
        self.dropped += count
        if self.dropped == count or self.dropped % 100 < count:
            log.warning("SIEM %s: %d record(s) dropped: %s; %d dropped so far", self.name,
                        count, reason, self.dropped)
        self._report("dropped", count)

    def _report(self, outcome: Outcome, count: int) -> None:
        if self._on_outcome is None:
            return
        try:
            self._on_outcome(self.name, outcome, count)
        except Exception:
            log.exception("SIEM outcome hook failed")
