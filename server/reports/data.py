"""Gather the compliance report from the database: one `ComplianceReport`, every format's input."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from server.schemas.compliance import ComplianceReport
from server.store import compliance
from server.store.violations_query import ViolationFilters, count_violations, query_violations

# A report is read by people: the most recent open violations, not tens of thousands of them
# (the violations export has them all).
OPEN_VIOLATIONS_SHOWN = 200
WORST_GROUPS_SHOWN = 10


def build_report(session: Session, now: dt.datetime, silent_after: dt.timedelta, days: int,
                 group: str | None = None,
                 exceptions: list[dict[str, Any]] | None = None) -> ComplianceReport:
    """The report for the last `days` days of the fleet, or of one group."""
    standings = compliance.current_by_group(session, now, silent_after)
    if group is not None:
        standings = [row for row in standings if (row["group"] or "") == group]
    filters = ViolationFilters(status="open", group=group)
    open_rows, _ = query_violations(session, filters, limit=OPEN_VIOLATIONS_SHOWN)
    wanted_exceptions = [item for item in exceptions or []
                         if group is None or group in item["groups"] or item["hosts"]]
    return ComplianceReport.model_validate({
        "generated_at": now.isoformat(),
        "days": days,
        "group": group,
        "now": _total(standings, group),
        "trend": compliance.history(session, now.date(), days, group),
        "worst_groups": standings[:WORST_GROUPS_SHOWN] if group is None else [],
        "time_to_remediate": compliance.time_to_remediate(session, now.date(), days, group),
        "open_violations": open_rows,
        "open_violations_total": count_violations(session, filters),
        "exceptions": wanted_exceptions,
    })


def _total(standings: list[dict[str, Any]], group: str | None) -> dict[str, Any]:
    total: dict[str, Any] = {"group": group, "compliant": 0, "with_open_violation": 0,
                             "silent": 0, "total": 0, "open_by_app": {}}
    for row in standings:
        for name in ("compliant", "with_open_violation", "silent", "total"):
            total[name] += row[name]
        for app, count in row["open_by_app"].items():
            total["open_by_app"][app] = total["open_by_app"].get(app, 0) + count
    total["compliant_percent"] = (round(100.0 * total["compliant"] / total["total"], 1)
                                  if total["total"] else 100.0)
    return total
