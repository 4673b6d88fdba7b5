"""The compliance report as one self-contained HTML file (styles inline, chart as SVG)."""

from __future__ import annotations

import datetime as dt
from importlib import resources

import jinja2

from server import charts
from server.schemas.compliance import ComplianceReport


def _templates() -> jinja2.Environment:
    directory = resources.files("server") / "templates"
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(directory)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def render_html(report: ComplianceReport) -> bytes:
    series = [(dt.date.fromisoformat(point.day), point.compliant_percent)
              for point in report.trend]
    chart = charts.percent_line_chart(series, "trend-chart",
                                      f"Machines compliant per day, last {report.days} days")
    generated = dt.datetime.fromisoformat(report.generated_at)
    page = _templates().get_template("report_compliance.html").render(
        report=report, chart=chart, generated=generated.strftime("%Y-%m-%d %H:%M UTC"))
    return page.encode()
