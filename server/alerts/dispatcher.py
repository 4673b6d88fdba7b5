"""The alert queue and its single worker thread.

Ingestion calls `submit` while it holds a request open, so `submit` only appends
to a bounded in-memory queue and returns; a full queue drops the alert (and
counts it) rather than ever making an agent wait. One worker thread, started
explicitly by the server, drains the queue and retries each destination with
exponential backoff and jitter until `retry_max_seconds` have passed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import requests

from server.alerts.delivery import DeliveryError, RetryableError, Sender
from server.alerts.syslog import SyslogSender
from server.alerts.webhook import WebhookSender

log = logging.getLogger(__name__)

# Called with (destination, outcome): outcome is "delivered", "failed" or "dropped".
OutcomeHook = Callable[[str, str], None]


class AlertDispatcher:
    """Deliver findings to a webhook and/or syslog without blocking the caller.

    Counters: `delivered` and `failed` count deliveries to one destination (a finding
    sent to both webhook and syslog counts twice); `dropped` counts findings that
    found the queue full or the dispatcher stopped.
    """

    def __init__(
        self,
        webhook_url: str | None,
        syslog_address: str | None,
        retry_max_seconds: float = 300.0,
        session: requests.Session | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        queue_size: int = 1000,
        timeout: float = 10.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        hostname: str | None = None,
        app_names: Mapping[str, str] | None = None,
        on_outcome: OutcomeHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.senders: list[Sender] = []
        if webhook_url:
            self.senders.append(WebhookSender(webhook_url, session, timeout, app_names))
        if syslog_address:
            self.senders.append(SyslogSender(syslog_address, hostname, timeout, app_names))
        self.retry_max_seconds = retry_max_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._clock = clock
        # The default sleep wakes up early when stop() is called.
        self._sleep = sleep or self._interruptible_sleep
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()
        self._queue_size = queue_size
        self._pending: deque[dict[str, Any]] = deque()
        self._changed = threading.Condition()
        self._busy = False
        self._closing = False
        self._interrupt = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivered = 0
        self._failed = 0
        self._dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.senders)

    @property
    def delivered(self) -> int:
        return self._delivered

    @property
    def failed(self) -> int:
        return self._failed

    @property
    def dropped(self) -> int:
        return self._dropped

    def submit(self, finding: dict[str, Any]) -> None:
        """Queue one finding for every destination; never blocks, never raises."""
        if not self.senders:
            return
        with self._changed:
            if not self._closing and len(self._pending) < self._queue_size:
                self._pending.append(finding)
                self._changed.notify_all()
                return
            self._dropped += 1
            dropped = self._dropped
            reason = "stopped" if self._closing else f"queue full ({self._queue_size})"
        # Log the first drop and then every hundredth: a flood must not flood the log too.
        if dropped == 1 or dropped % 100 == 0:
            log.warning("alert for finding %s dropped: %s; %d dropped so far",
                        finding.get("id"), reason, dropped)
        for sender in self.senders:
            self._report(sender.name, "dropped")

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the alert dispatcher was already started")
        if not self.senders:
            return
        self._thread = threading.Thread(target=self._run, name="warden-alerts", daemon=True)
        self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert was delivered or given up; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting alerts, try what is still queued once each, and end the worker.

        A delivery waiting to retry gives up at once. Returns False if the worker
        was still busy (e.g. with a hanging receiver) when `timeout` ran out.
        """
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._interrupt.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        else:
            self._drop_unsent()
        if stopped:
            for sender in self.senders:
                sender.close()
        return stopped

    def _drop_unsent(self) -> None:
        # Never started, so nothing will send what was queued: say it was lost.
        with self._changed:
            lost = len(self._pending)
            self._pending.clear()
            self._dropped += lost
            self._changed.notify_all()
        if lost:
            log.warning("%d queued alert(s) dropped: the dispatcher stopped before it started",
                        lost)
        for _ in range(lost):
            for sender in self.senders:
                self._report(sender.name, "dropped")

    def _run(self) -> None:
        while (finding := self._next()) is not None:
            try:
                for sender in self.senders:
                    ok = self._deliver(sender, finding)
                    with self._changed:
                        if ok:
                            self._delivered += 1
                        else:
                            self._failed += 1
                    self._report(sender.name, "delivered" if ok else "failed")
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _next(self) -> dict[str, Any] | None:
        with self._changed:
            self._changed.wait_for(lambda: bool(self._pending) or self._closing)
            if not self._pending:
                return None
            self._busy = True
            return self._pending.popleft()

    def _deliver(self, sender: Sender, finding: dict[str, Any]) -> bool:
        deadline = self._clock() + self.retry_max_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                sender.send(finding)
                return True
            except RetryableError as exc:
                delay = self.backoff(attempt)
                if exc.retry_after is not None:
                    # Never earlier than the receiver asked, nor a tight loop on "0".
                    delay = max(delay, exc.retry_after)
                if self._interrupt.is_set() or self._clock() + delay > deadline:
                    log.warning("alert for finding %s not delivered after %d attempt(s): %s",
                                finding.get("id"), attempt, exc)
                    return False
                log.info("alert for finding %s: %s; retry %d in %.1fs",
                         finding.get("id"), exc, attempt, delay)
                self._sleep(delay)
            except DeliveryError as exc:
                log.warning("alert for finding %s not delivered: %s", finding.get("id"), exc)
                return False
            except Exception:
                # A bug in one sender must not end the worker and silence every later alert.
                log.exception("alert for finding %s: %s failed", finding.get("id"), sender.name)
                return False

    def backoff(self, attempt: int) -> float:
        """Delay after the `attempt`-th failure: doubling, capped, half of it jittered."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _interruptible_sleep(self, seconds: float) -> None:
        self._interrupt.wait(seconds)

    def _report(self, destination: str, outcome: str) -> None:
        if self._on_outcome is None:
            return
        try:
            self._on_outcome(destination, outcome)
        except Exception:
            log.exception("alert outcome hook failed")
