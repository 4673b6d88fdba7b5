"""Build the compliance report with the active exceptions: what the API, the dashboard, the
CLI (through the API) and the weekly task all call."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from server.reports.data import build_report
from server.reports.exception_source import active_exceptions
from server.schemas.compliance import ComplianceReport


def report_for(session: Session, now: dt.datetime, silent_after: dt.timedelta, days: int,
               group: str | None = None) -> ComplianceReport:
    return build_report(session, now, silent_after, days, group,
                        exceptions=active_exceptions(session, now))
