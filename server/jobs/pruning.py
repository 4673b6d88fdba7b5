"""Pruning old data in short transactions, from the CLI or a daily background thread.

`prune` deletes events received more than N days ago, then findings resolved
more than N days ago with all their events (server.store.retention says what
qualifies; open findings never do). Each batch of at most `batch_size` rows is
its own transaction, and `prune` pauses between batches: on SQLite the writer
lock is released and — because a lock gives no turn to whoever waited — the
pause is what lets an ingesting request take it. Concurrent prunes (two servers,
a cron job) are safe: batches are serialised and deleting is idempotent.

A batch is sized by time, not only by rows: deleting an event cost 80-340 µs
on this project's (shared, loaded) machine — three indexes to update, one keyed
by random UUIDs — so 5,000 of them held SQLite's write lock up to 2 s and
every ingest batch queued behind it (bench/pruning_ingest.py). Each batch's
size is set from the last one's time so that a batch holds the lock about
BATCH_TARGET_SECONDS, between MIN_BATCH_ROWS and `batch_size`: with the pause,
pruning takes at most about half the writer's time, and ingest waits for one
short batch at most. Measured under saturating ingest: PostgreSQL ingest kept
85 % of its rate instead of 55 %; SQLite's did not gain (something other than
the lock's length holds it back; docs/benchmarks.md); the prune, yielding,
ran several times slower.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server.db import utcnow
from server.store import retention

if TYPE_CHECKING:
    from server.api.deps import ServerContext
    from server.settings import ServerSettings

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 180
BATCH_ROWS = 5_000  # the most rows a batch deletes
MIN_BATCH_ROWS = 200
FIRST_BATCH_ROWS = 1_000
# How long a batch should hold the write lock (SQLite) or its transaction open.
BATCH_TARGET_SECONDS = 0.05
PAUSE_SECONDS = 0.05
DAY_SECONDS = 24 * 60 * 60
# The background task's first run waits this long after start: servers restarted
# often (deploys) still prune, and a start is not slowed by a large first prune.
FIRST_RUN_AFTER_SECONDS = 300.0

# Called between two batches; False stops the prune early (the server is stopping).
BetweenBatches = Callable[[], bool]


def retention_days(settings: ServerSettings) -> int:
    return settings.retention_days


def pause_between_batches(seconds: float = PAUSE_SECONDS,
                          stop: threading.Event | None = None) -> BetweenBatches:
    """Wait `seconds` between batches; stop early once `stop` is set."""
    event = stop or threading.Event()
    return lambda: not event.wait(seconds)


@dataclass(frozen=True)
class PruneReport:
    days: int
    cutoff: dt.datetime
    events: int  # deleted (or, on a dry run, that would be)
    findings: int
    batches: int  # transactions that deleted something
    dry_run: bool = False
    complete: bool = True  # False: stopped between batches before the end

    def as_dict(self) -> dict[str, Any]:
        return {"days": self.days, "cutoff": self.cutoff.isoformat(), "events": self.events,
                "findings": self.findings, "batches": self.batches, "dry_run": self.dry_run,
                "complete": self.complete}


def prune(
    sessions: sessionmaker[Session],
    days: int,
    *,
    now: dt.datetime | None = None,
    batch_size: int = BATCH_ROWS,
    dry_run: bool = False,
    between_batches: BetweenBatches | None = None,
) -> PruneReport:
    """Delete what is older than `days` days, batch by batch; `sessions` must be writers."""
    if days < 1:
        raise ValueError("retention must be at least one day")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    if dry_run:
        with sessions() as session:
            counts = retention.count_prunable(session, cutoff)
        return PruneReport(days, cutoff, counts.events, counts.findings, 0, dry_run=True)
    between = between_batches or pause_between_batches()
    run = _Run(sessions, cutoff, batch_size, between)
    complete = run.events() and run.findings()
    return PruneReport(days, cutoff, run.deleted_events, run.deleted_findings, run.batches,
                       complete=complete)


class BatchSizer:
    """Rows for the next batch, from how long the last full one took (see the module doc)."""

    def __init__(self, most: int, target_seconds: float = BATCH_TARGET_SECONDS) -> None:
        self.most = most
        self.least = min(most, MIN_BATCH_ROWS)
        self.rows = min(most, FIRST_BATCH_ROWS)
        self._target = target_seconds

    def took(self, seconds: float) -> None:
        # At most doubling: one fast batch (a cache that happened to be warm) must not
        # make the next one hold the lock for long.
        wanted = self.rows * self._target / max(seconds, 1e-6)
        self.rows = int(max(self.least, min(self.most, 2 * self.rows, wanted)))


class _Run:
    """One prune's batches and running totals."""

    def __init__(self, sessions: sessionmaker[Session], cutoff: dt.datetime, batch_size: int,
                 between: BetweenBatches) -> None:
        self._sessions = sessions
        self._cutoff = cutoff
        self._size = BatchSizer(batch_size)
        self._between = between
        self.deleted_events = 0
        self.deleted_findings = 0
        self.batches = 0

    def events(self) -> bool:
        """Old events first: they are most of the rows, and what a finding batch then
        still has to delete of its own events is little. False if stopped early."""
        while True:
            rows = self._size.rows
            with self._sessions() as session:
                began = self._begin(session)
                deleted = retention.delete_old_events(session, self._cutoff, rows)
                session.commit()
            self._size.took(time.perf_counter() - began)
            if deleted:
                self.batches += 1
                self.deleted_events += deleted
            if deleted < rows:
                return True
            if not self._between():
                return False

    def findings(self) -> bool:
        after: tuple[str, str] | None = None
        while True:
            with self._sessions() as session:
                began = self._begin(session)
                refs = retention.lock_resolved_findings(session, self._cutoff,
                                                        self._size.rows, after)
                findings, events = retention.delete_findings(session, refs)
                session.commit()
            if not refs:
                return True
            self._size.took(time.perf_counter() - began)
            self.batches += 1
            self.deleted_findings += findings
            self.deleted_events += events
            after = (refs[-1].agent_id, refs[-1].key)
            if not self._between():
                return False

    @staticmethod
    def _begin(session: Session) -> float:
        """Start the batch's transaction (on SQLite: wait for the write lock) and the clock,
        so a batch is timed by how long it holds the lock, not by how long it waited."""
        session.connection()
        retention.lock_pruning(session)
        return time.perf_counter()


class RetentionTask:
    """Prunes once a day on a daemon thread, until `stop()`."""

    def __init__(
        self,
        context: ServerContext,
        interval_seconds: float = DAY_SECONDS,
        first_run_after_seconds: float = FIRST_RUN_AFTER_SECONDS,
        batch_size: int = BATCH_ROWS,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._context = context
        self._interval = interval_seconds
        self._first_run_after = first_run_after_seconds
        self._batch_size = batch_size
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Condition()
        self.runs = 0  # prunes finished (or failed), for tests and status
        self.last_report: PruneReport | None = None

    def start(self) -> None:
        """Start the thread; a no-op while it runs (an app's lifespan may be entered twice)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the thread to stop (between batches at the latest); True once it has."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def shutdown(self) -> None:
        """`stop()` for the app's shutdown hooks, which return nothing."""
        if not self.stop():
            log.warning("the retention task did not stop in time; it ends with the process")

    def wait_for_runs(self, count: int, timeout: float) -> bool:
        """Block until `count` prunes have finished; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.runs >= count, timeout)

    def run_once(self) -> PruneReport | None:
        days = retention_days(self._context.settings)
        try:
            report = prune(self._context.write_sessions, days, batch_size=self._batch_size,
                           between_batches=pause_between_batches(stop=self._stop))
        except sa.exc.SQLAlchemyError:
            # The database may be down for a while; the next day's run catches up.
            log.exception("pruning data older than %d days failed", days)
            return None
        if report.events or report.findings:
            log.info("pruned %d events and %d resolved findings older than %d days",
                     report.events, report.findings, days)
        return report

    def _run(self) -> None:
        delay = self._first_run_after
        stop = self._stop
        while not stop.wait(delay):
            report = self.run_once()
            with self._done:
                self.last_report = report or self.last_report
                self.runs += 1
                self._done.notify_all()
            delay = self._interval


def start_retention_task(context: ServerContext,
                         interval_seconds: float = DAY_SECONDS) -> RetentionTask:
    """Start pruning in the background (first run after a few minutes); call `.stop()`
    on shutdown."""
    task = RetentionTask(context, interval_seconds)
    task.start()
    return task
