"""The daily compliance snapshot and the weekly report, in one background thread.

Every hour the task asks "is today's snapshot taken?" and takes it if not, so
a server that was down at midnight, or restarts all day, still records each
day exactly once (a snapshot of a day replaces that day's: server.store.compliance).
Snapshots older than the retention setting go at the same time. On the weekday
`weekly_report_weekday`, it also writes the week's PDF report to
`<data_dir>/reports/` — once per ISO week, since the file's name is the week —
and, when an alert webhook is set, posts a short summary naming the file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import sqlalchemy as sa

from server.db import utcnow
from server.reports import render
from server.reports.service import report_for
from server.schemas.compliance import ComplianceReport
from server.store import compliance

if TYPE_CHECKING:
    from server.api.deps import ServerContext

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 3600.0
# Soon after start: the check is a few aggregate queries, and a server started today
# should have today in its history.
FIRST_CHECK_AFTER_SECONDS = 5.0
REPORTS_DIR = "reports"

Poster = Callable[[str, dict[str, object]], None]


def _post_json(url: str, body: dict[str, object]) -> None:
    response = requests.post(url, data=json.dumps(body).encode(), timeout=10,
                             headers={"Content-Type": "application/json"})
    response.raise_for_status()


class ComplianceTask:
    def __init__(self, context: ServerContext, interval_seconds: float = CHECK_EVERY_SECONDS,
                 first_check_after_seconds: float = FIRST_CHECK_AFTER_SECONDS,
                 post: Poster = _post_json) -> None:
        self._context = context
        self._interval = interval_seconds
        self._first = first_check_after_seconds
        self._post = post
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compliance", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        delay = self._first
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except (sa.exc.SQLAlchemyError, OSError):
                # The database or disk may be away for a while; the next hour tries again.
                log.exception("the compliance snapshot or weekly report failed")
            delay = self._interval

    def run_once(self, now: dt.datetime | None = None) -> bool:
        """Take today's snapshot if it is missing (True if it took one), prune old ones, and
        write this week's report when it is due."""
        now = now or utcnow()
        settings = self._context.settings
        took = False
        with self._context.write_sessions() as session:
            if not compliance.has_snapshot(session, now.date()):
                compliance.take_snapshot(session, now, settings.silent_after)
                took = True
            compliance.prune_snapshots(
                session, now.date() - dt.timedelta(days=settings.retention_days))
            session.commit()
        if settings.weekly_report_weekday == now.weekday():
            self.weekly_report(now)
        return took

    def weekly_report(self, now: dt.datetime) -> Path | None:
        """This ISO week's PDF in the data directory (None if it exists already)."""
        settings = self._context.settings
        year, week, _ = now.isocalendar()
        target = settings.data_dir / REPORTS_DIR / f"compliance-{year}-W{week:02d}.pdf"
        if target.exists():
            return None
        with self._context.read_sessions() as session:
            report = report_for(session, now, settings.silent_after,
                                settings.weekly_report_days)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".pdf.partial")
        partial.write_bytes(render.render(report, "pdf"))
        partial.replace(target)
        log.info("wrote the weekly compliance report to %s", target)
        if settings.alert_webhook_url:
            try:
                self._post(settings.alert_webhook_url, announcement(report, target))
            except requests.RequestException:
                log.exception("could not announce the weekly report to the webhook")
        return target


def announcement(report: ComplianceReport, path: Path) -> dict[str, object]:
    """The webhook message: a Slack-compatible `text`, the summary, and where the PDF is."""
    now = report.now
    text = (f"Warden weekly compliance: {now.compliant} of {now.total} machines compliant "
            f"({now.compliant_percent:g}%), {now.with_open_violation} with an open violation, "
            f"{now.silent} silent. Report: {path}")
    return {"text": text, "report": {"kind": "compliance_weekly", "file": str(path),
                                     "generated_at": report.generated_at,
                                     "summary": now.model_dump(mode="json"),
                                     "open_violations": report.open_violations_total}}
