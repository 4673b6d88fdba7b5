"""Each sensor's health: scans with a deadline, on workers the watch loop never waits for.

A sensor blocked in a read (a stuck NFS home, a slow package database) must
neither stall the others nor go unnoticed. So the slow sensors (installed apps,
the network listing) scan on a `SensorWorker` of their own: one daemon thread
each, reused for every scan. The loop hands a scan over and carries on; it
takes the result when the worker says it is done. A scan still running past its
deadline makes the sensor `stalled`, and no other scan is started until it
returns: a second one would only block beside the first. A scan that raised
makes it `error`, with the message. Daemon threads, so one stuck in a system
call cannot keep the agent from exiting.

The process tick runs on the loop itself (its latency is what the agent is
for), so the loop keeps a `ScanRecord` of its ticks: whoever asks for the
health (the check-in thread) sees a loop stuck in a tick as `process: stalled`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agent.scanning.findings import format_time
from policies.observations import SensorState

T = TypeVar("T")

# The server keeps a sensor's detail to 1,024 characters; an exception's text can be longer.
MAX_DETAIL = 500


@dataclass(frozen=True)
class SensorHealth:
    state: SensorState
    # Wall-clock time (seconds since the epoch) the last scan that returned did so.
    last_ok: float | None = None
    detail: str = ""

    def as_status(self) -> dict[str, Any]:
        """The check-in's shape: {"state", "last_ok" (RFC 3339 or null), "detail"}."""
        when = (format_time(dt.datetime.fromtimestamp(self.last_ok, dt.UTC))
                if self.last_ok is not None else None)
        return {"state": self.state, "last_ok": when, "detail": self.detail}


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:MAX_DETAIL]


class ScanRecord:
    """When one sensor's scan started and how the last one ended: its health at any moment.

    Written by the thread that scans, read by any other; a lock keeps the two consistent.
    """

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        if deadline <= 0:
            raise ValueError(f"a sensor deadline must be more than 0 seconds, not {deadline}")
        self.deadline = deadline
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None
        self._last_ok: float | None = None
        self._error: str | None = None

    def started(self) -> None:
        with self._lock:
            self._started = self._clock()

    def finished(self, error: str | None = None) -> None:
        with self._lock:
            self._started = None
            self._error = error
            if error is None:
                self._last_ok = time.time()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._started is not None

    def health(self) -> SensorHealth:
        with self._lock:
            started, last_ok, error = self._started, self._last_ok, self._error
        if started is not None:
            running = self._clock() - started
            if running > self.deadline:
                return SensorHealth("stalled", last_ok, (
                    f"a scan has been running for {running:.0f} s, past its "
                    f"{self.deadline:g} s deadline; none is started until it returns"))
        if error is not None:
            return SensorHealth("error", last_ok, error)
        return SensorHealth("ok", last_ok)


@dataclass(frozen=True)
class Done(Generic[T]):
    """A finished scan: its value, or the error that ended it."""

    value: T | None
    error: str | None = None


class SensorWorker(Generic[T]):
    """Runs one sensor's scans, one at a time, on a daemon thread started at the first."""

    def __init__(self, name: str, deadline: float, on_done: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.record = ScanRecord(deadline, clock)
        self._on_done = on_done
        self._changed = threading.Condition()
        self._job: Callable[[], T] | None = None
        self._done: Done[T] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """A scan was handed over and has not returned (or its result was not taken)."""
        with self._changed:
            return self._job is not None or self._done is not None

    def submit(self, job: Callable[[], T]) -> bool:
        """Start `job` on the worker; False (and nothing started) while the last is busy."""
        with self._changed:
            if self._closed or self._job is not None or self._done is not None:
                return False
            self._job = job
            self.record.started()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"warden-sensor-{self.name}")
                self._thread.start()
            self._changed.notify()
            return True

    def take(self) -> Done[T] | None:
        """The finished scan's outcome, once; None while none has finished since."""
        with self._changed:
            done, self._done = self._done, None
            return done

    def wait(self, timeout: float) -> Done[T] | None:
        """`take`, after waiting up to `timeout` for the scan in flight (for a one-shot scan)."""
        with self._changed:
            self._changed.wait_for(lambda: self._done is not None or self._job is None, timeout)
        return self.take()

    def close(self) -> None:
        """Let the thread go once its scan returns; a scan stuck for good stays with it."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._job is not None or self._closed)
                job = self._job
            if job is None:
                return
            try:
                done: Done[T] = Done(job())
            except Exception as exc:  # whatever a sensor trips on is its `error`, not the agent's
                done = Done(None, describe_error(exc))
            self.record.finished(done.error)
            with self._changed:
                self._job, self._done = None, done
                self._changed.notify_all()
            self._on_done()
