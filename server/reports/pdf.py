"""The compliance report as a PDF, drawn with fpdf2 (pure Python; see docs/reports.md).

Text is set in DejaVu Sans when the system has it (hostnames and reasons may be
Cyrillic, which the PDF core fonts cannot show); without it, in Helvetica with
characters outside Latin-1 replaced by "?", so a report is never refused.
The trend chart is drawn with the PDF's own lines: sharp at any zoom.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from server.schemas.compliance import ComplianceReport

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
             Path("/usr/local/share/fonts"), Path("/Library/Fonts"))
_ACCENT = (37, 99, 235)
_GRID = (220, 224, 230)


class _Report(FPDF):
    def __init__(self) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.family = "helvetica"
        self.unicode = False
        regular = _find("DejaVuSans.ttf")
        bold = _find("DejaVuSans-Bold.ttf")
        if regular and bold:
            self.add_font("DejaVu", "", str(regular))
            self.add_font("DejaVu", "B", str(bold))
            self.family, self.unicode = "DejaVu", True
        self.set_auto_page_break(auto=True, margin=15)
        self.set_margins(15, 15, 15)

    def text_of(self, value: object) -> str:
        text = "—" if value is None or value == "" else str(value)
        if self.unicode:
            return text
        return text.replace("—", "-").replace("…", "...").encode(
            "latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.family, "", 8)
        self.cell(0, 5, self.text_of(f"Warden compliance report · page {self.page_no()}"),
                  align="C")

    def heading(self, text: str) -> None:
        self.ln(4)
        self.set_font(self.family, "B", 13)
        self.cell(0, 8, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(self.family, "", 9)

    def line_of_text(self, text: str, size: float = 9) -> None:
        self.set_font(self.family, "", size)
        self.multi_cell(0, 5, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def rows(self, header: list[str], body: list[list[object]],
             widths: tuple[int, ...]) -> None:
        self.set_font(self.family, "", 8)
        rows: list[list[object]] = [list(header), *body]
        with self.table(col_widths=widths, text_align="LEFT", line_height=5,
                        first_row_as_headings=True) as table:
            for cells in rows:
                row = table.row()
                for value in cells:
                    row.cell(self.text_of(value))


def _find(name: str) -> Path | None:
    return next((folder / name for folder in FONT_DIRS if (folder / name).is_file()), None)


def render_pdf(report: ComplianceReport) -> bytes:
    pdf = _Report()
    pdf.set_title("Warden compliance report")
    pdf.set_creator("Warden")
    pdf.add_page()
    scope = f"group {report.group}" if report.group else "the whole fleet"
    pdf.set_font(pdf.family, "B", 18)
    pdf.cell(0, 10, "Compliance report", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    generated = dt.datetime.fromisoformat(report.generated_at).strftime("%Y-%m-%d %H:%M UTC")
    pdf.line_of_text(f"{scope.capitalize()}, last {report.days} days · generated {generated}")

    now = report.now
    pdf.heading("Summary")
    pdf.line_of_text(
        f"{now.compliant} of {now.total} machines compliant ({now.compliant_percent:g}%); "
        f"{now.with_open_violation} with an open violation; {now.silent} silent.", size=11)
    apps = ", ".join(f"{app}: {count}" for app, count in now.open_by_app.items())
    pdf.line_of_text(f"Open violations by app: {apps or 'none'}. "
                     f"Open violations in all: {report.open_violations_total}.")

    pdf.heading("Trend: machines compliant, per day")
    _trend_chart(pdf, [(point.day, point.compliant_percent) for point in report.trend])

    if report.worst_groups:
        pdf.heading("Worst groups")
        pdf.rows(["Group", "Compliant", "With violation", "Silent", "Total", "% compliant"],
                 [[g.group or "(no group)", g.compliant, g.with_open_violation, g.silent,
                   g.total, f"{g.compliant_percent:g}%"] for g in report.worst_groups],
                 (50, 24, 28, 20, 20, 28))
    pdf.heading("Time to remediate")
    if report.time_to_remediate:
        pdf.rows(["Group", "Resolved", "Median days"],
                 [[t.group or "(no group)", t.resolved, f"{t.median_days:g}"]
                  for t in report.time_to_remediate], (90, 40, 40))
    else:
        pdf.line_of_text("No violation was resolved in the period.")

    pdf.heading(f"Open violations ({report.open_violations_total})")
    if report.open_violations:
        pdf.rows(["App", "Host", "Group", "Open since", "Last seen", "Triage"],
                 [[v.app, v.host, v.group, v.opened_at[:10], v.last_seen[:10], v.triage]
                  for v in report.open_violations], (22, 45, 30, 27, 27, 29))
        if report.open_violations_total > len(report.open_violations):
            pdf.line_of_text(f"The {len(report.open_violations)} most recently seen are "
                             "listed; the violations export has them all.")
    else:
        pdf.line_of_text("None.")

    pdf.heading("Active exceptions and their expiry")
    if report.exceptions:
        pdf.rows(["App", "Hosts", "Groups", "Until", "Reason"],
                 [[e.app, ", ".join(e.hosts), ", ".join(e.groups), e.until, e.reason]
                  for e in report.exceptions], (22, 40, 30, 25, 63))
    else:
        pdf.line_of_text("No exception is in force.")
    return bytes(pdf.output())


def _trend_chart(pdf: _Report, series: list[tuple[str, float]]) -> None:
    left, width, height = pdf.l_margin + 12, pdf.epw - 12, 45.0
    top = pdf.get_y() + 2
    pdf.set_font(pdf.family, "", 7)
    pdf.set_draw_color(*_GRID)
    pdf.set_line_width(0.2)
    for tick in (0, 25, 50, 75, 100):
        y = top + height * (1 - tick / 100)
        pdf.line(left, y, left + width, y)
        pdf.text(pdf.l_margin, y + 1, f"{tick}%")
    if not series:
        pdf.text(left + 4, top + height / 2, pdf.text_of("No snapshot yet in this period."))
    step = width / max(len(series) - 1, 1)
    points = [(left + index * step, top + height * (1 - value / 100))
              for index, (_, value) in enumerate(series)]
    pdf.set_draw_color(*_ACCENT)
    pdf.set_fill_color(*_ACCENT)
    pdf.set_line_width(0.6)
    if len(points) > 1:
        pdf.polyline(points)
    for x, y in points:
        pdf.circle(x, y, 0.8, style="F")
    for index, (day, _) in enumerate(series):
        if (len(series) - 1 - index) % 7 == 0:
            pdf.text(points[index][0] - 4, top + height + 4, day[5:])
    pdf.set_draw_color(0, 0, 0)
    pdf.set_y(top + height + 8)
