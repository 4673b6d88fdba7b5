"""The compliance report as CSV: one file, a section per table, each with its own header row.

A section starts with a row holding only its name (`# summary`, `# trend` …), so a
spreadsheet shows them one under the other and a script can split on them.
Cells are made safe as in every Warden CSV (server.untrusted_text.csv_cell).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from server.schemas.compliance import ComplianceReport
from server.untrusted_text import csv_cell


def render_csv(report: ComplianceReport) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def section(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        writer.writerow([f"# {name}"])
        writer.writerow(header)
        for row in rows:
            writer.writerow([csv_cell(column, value)
                             for column, value in zip(header, row, strict=True)])
        writer.writerow([])

    now = report.now
    section("summary", ["generated_at", "group", "days", "compliant", "with_open_violation",
                        "silent", "total", "compliant_percent", "open_violations"],
            [[report.generated_at, report.group, report.days, now.compliant,
              now.with_open_violation, now.silent, now.total, now.compliant_percent,
              report.open_violations_total]])
    section("trend", ["day", "compliant", "with_open_violation", "silent", "total",
                      "compliant_percent", "open_by_app"],
            [[p.day, p.compliant, p.with_open_violation, p.silent, p.total,
              p.compliant_percent, p.open_by_app] for p in report.trend])
    section("worst_groups", ["group", "compliant", "with_open_violation", "silent", "total",
                             "compliant_percent"],
            [[g.group, g.compliant, g.with_open_violation, g.silent, g.total,
              g.compliant_percent] for g in report.worst_groups])
    section("time_to_remediate", ["group", "resolved", "median_days"],
            [[t.group, t.resolved, t.median_days] for t in report.time_to_remediate])
    section("open_violations", ["id", "app", "host", "group", "opened_at", "last_seen",
                                "triage", "sensor_counts"],
            [[v.id, v.app, v.host, v.group, v.opened_at, v.last_seen, v.triage,
              v.sensor_counts] for v in report.open_violations])
    section("exceptions", ["app", "hosts", "groups", "until", "reason", "source"],
            [[e.app, " ".join(e.hosts), " ".join(e.groups), e.until, e.reason, e.source]
             for e in report.exceptions])
    return buffer.getvalue().encode()
