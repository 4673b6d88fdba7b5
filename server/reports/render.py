"""One report, any format: the media type, file name and bytes for each."""

from __future__ import annotations

from collections.abc import Callable

from server.reports.html import render_html
from server.reports.tabular import render_csv
from server.schemas.compliance import ComplianceReport

MEDIA_TYPES = {"pdf": "application/pdf", "html": "text/html; charset=utf-8",
               "csv": "text/csv; charset=utf-8", "json": "application/json"}


def _json(report: ComplianceReport) -> bytes:
    return report.model_dump_json(indent=2).encode()


def _pdf(report: ComplianceReport) -> bytes:
    # fpdf2 and its fontTools are half of what the server imports at start-up (about 0.6 s
    # of CPU per process): loaded when the first PDF is asked for, not by every process.
    from server.reports.pdf import render_pdf

    return render_pdf(report)


RENDERERS: dict[str, Callable[[ComplianceReport], bytes]] = {
    "pdf": _pdf, "html": render_html, "csv": render_csv, "json": _json}


def render(report: ComplianceReport, format: str) -> bytes:
    return RENDERERS[format](report)


def file_name(report: ComplianceReport, format: str) -> str:
    stamp = report.generated_at[:10]
    scope = f"-{_safe(report.group)}" if report.group else ""
    return f"warden-compliance{scope}-{stamp}.{format}"


def _safe(text: str) -> str:
    # A group name goes into a header and a file name: letters, digits, - and _ only.
    kept = "".join(char if char.isascii() and (char.isalnum() or char in "-_") else "_"
                   for char in text)
    return kept[:40] or "group"
