"""Server-side SVG charts: no JavaScript, no CDN, and they print.

Colours come from CSS classes (``series-0`` …) in panel.css, so the SVG has no
inline styles and passes the panel's Content-Security-Policy. Every chart sits
next to a table with the same numbers for anyone who wants to copy them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 10, 34


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


def _nice_max(value: float) -> float:
    """Round the axis top up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _frame(
    title: str, top: float, label_every: int, labels: Sequence[str], slot: float
) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for i in range(5):
        y = TOP + plot_h * i / 4
        value = top * (4 - i) / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" '
            f'y2="{y:.1f}"/><text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{value:g}</text>'
        )
    for i, label in enumerate(labels):
        if i % label_every == 0:
            x = LEFT + slot * (i + 0.5)
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return parts


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Stacked bars, one per label, one colour per series."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(labels), 1)
    parts = _frame(title, top, max(1, len(labels) // 12), labels, slot)
    for i, label in enumerate(labels):
        base = 0.0
        for index, s in enumerate(series):
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y = TOP + plot_h - plot_h * (base + value) / top
            parts.append(
                f'<rect class="series-{index}" x="{LEFT + slot * i + slot * 0.15:.1f}" '
                f'y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
                f"<title>{escape(label)} {escape(s.name)}: {value:g}</title></rect>"
            )
            base += value
    parts.append("</svg>")
    return Markup("".join(parts))


def step_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> Markup:
    """A step line: the value holds until the next sample (occupancy over a day)."""
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(values), 1)
    parts = _frame(title, top, max(1, len(labels) // 12), labels, slot)
    points: list[str] = []
    for i, value in enumerate(values):
        y = TOP + plot_h - plot_h * value / top
        points.append(f"{LEFT + slot * i:.1f},{y:.1f} {LEFT + slot * (i + 1):.1f},{y:.1f}")
    if points:
        parts.append(f'<polyline class="line series-0" fill="none" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
