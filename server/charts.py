"""Server-side SVG charts: no JavaScript, no library, readable by screen readers.

The SVG is inline in the page, styled by classes from dashboard.css (the
Content-Security-Policy forbids inline styles), and every bar carries a
<title> so hovering or a screen reader gives its exact value.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 12, 28


def nice_ticks(highest: int, most: int = 5) -> list[int]:
    """Round gridline values from 0 covering `highest` (steps of 1, 2 or 5 times 10^k)."""
    if highest <= 0:
        return [0, 1]
    rough = highest / (most - 1)
    magnitude = 10 ** math.floor(math.log10(rough)) if rough >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    top = math.ceil(highest / step) * step
    return list(range(0, top + 1, step))


def bar_chart(series: Sequence[tuple[dt.date, int]], chart_id: str, title: str,
              unit: str = "finding") -> Markup:
    """A bar per day. `chart_id` makes the title/description ids unique on the page."""
    ticks = nice_ticks(max((count for _, count in series), default=0))
    top = ticks[-1]
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM
    slot = plot_width / max(len(series), 1)
    bar_width = max(slot * 0.7, 1.0)
    total = sum(count for _, count in series)
    first = series[0][0].isoformat() if series else ""
    last = series[-1][0].isoformat() if series else ""
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{total} {_plural(unit, total)} from {first} to {last}; '
        "the table below gives each day.</desc>",
    ]
    for tick in ticks:
        y = _TOP + plot_height * (1 - tick / top)
        parts.append(f'<line class="chart-grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="chart-label" x="{_LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{tick}</text>')
    for index, (day, count) in enumerate(series):
        height = plot_height * count / top
        x = _LEFT + index * slot + (slot - bar_width) / 2
        y = _TOP + plot_height - height
        parts.append(
            f'<rect class="chart-bar" x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" '
            f'height="{height:.1f}"><title>{day.isoformat()}: {count} '
            f"{_plural(unit, count)}</title></rect>")
        # A date every week, counted back from the last day, keeps the labels apart.
        if (len(series) - 1 - index) % 7 == 0:
            parts.append(f'<text class="chart-label" x="{x + bar_width / 2:.1f}" '
                         f'y="{HEIGHT - 8}" text-anchor="middle">{day:%b %d}</text>')
    parts.append(f'<line class="chart-axis" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" '
                 f'y1="{_TOP + plot_height}" y2="{_TOP + plot_height}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _plural(unit: str, count: int) -> str:
    return unit if count == 1 else unit + "s"


def percent_line_chart(series: Sequence[tuple[dt.date, float]], chart_id: str,
                       title: str) -> Markup:
    """A line of a percentage per day (0 to 100 on the axis), a dot and a <title> per day."""
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM
    slot = plot_width / max(len(series) - 1, 1)
    first = series[0][0].isoformat() if series else ""
    last = series[-1][0].isoformat() if series else ""
    latest = f"{series[-1][1]:g}%" if series else "no data"
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{len(series)} days from {first} to {last}; latest '
        f"{latest}.</desc>",
    ]
    for tick in (0, 25, 50, 75, 100):
        y = _TOP + plot_height * (1 - tick / 100)
        parts.append(f'<line class="chart-grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="chart-label" x="{_LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{tick}%</text>')
    points = [(_LEFT + index * slot, _TOP + plot_height * (1 - value / 100))
              for index, (_, value) in enumerate(series)]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline class="chart-line" points="{path}"/>')
    for (day, value), (x, y) in zip(series, points, strict=True):
        parts.append(f'<circle class="chart-dot" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                     f"<title>{day.isoformat()}: {value:g}% compliant</title></circle>")
    for index, (day, _) in enumerate(series):
        if (len(series) - 1 - index) % 7 == 0:
            parts.append(f'<text class="chart-label" x="{points[index][0]:.1f}" '
                         f'y="{HEIGHT - 8}" text-anchor="middle">{day:%b %d}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
