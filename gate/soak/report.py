"""The soak's report: every figure as JSON, and a Markdown page with one SVG chart per
sampled series over time, the faults marked as bands.

The panel's charts (gate/server/charts.py) take their colours from the panel's
stylesheet and draw bars over named slots; these are read on their own (a README,
a file browser), over a time axis, so they carry their own few inline styles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import escape

WIDTH, HEIGHT = 760, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 24, 28
# The sampled series, with what their values mean.
SERIES = {
    "gate_rss_mb": "gate resident memory (MB)",
    "station_rss_mb": "station emulator resident memory (MB)",
    "postgres_rss_mb": "PostgreSQL resident memory, all processes (MB)",
    "soak_rss_mb": "soak (camera, browsers) resident memory (MB)",
    "gate_fds": "gate open file descriptors",
    "gate_threads": "gate threads",
    "db_mb": "database size (MB)",
    "wal_mb": "WAL size (MB)",
    "log_mb": "gate.log size (MB)",
    "fps": "frames analysed per second",
    "loop_lag_ms": "event-loop lag, mean per sample (ms)",
    "latency_p95_ms": "decision latency p95 per sample (ms)",
    "open_alerts": "open (unacknowledged) alerts",
    "sse_clients": "open event streams",
}
SUMMARY_KEYS = (
    "minutes", "database", "seed", "visitors", "entries", "unlocks", "gate_restarts",
    "rss_slope_mb_per_h", "fd_growth", "thread_growth", "wal_max_mb",
    "latency_p95_first_ms", "latency_p95_last_ms", "warm_up_minutes",
)  # fmt: skip


def _nice_top(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 1.5, 2, 3, 5, 7.5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def line_chart(
    title: str,
    points: list[tuple[float, float]],
    faults: list[tuple[float, float, str]],
    span: float,
) -> str:
    """One series over seconds 0..span as an SVG line, faults as shaded bands."""
    top = _nice_top(max((v for _, v in points), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(span, 1.0)

    def x(t: float) -> float:
        return LEFT + plot_w * min(max(t, 0), span) / span

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{LEFT}" y="15" font-size="13" fill="#222">{escape(title)}</text>',
    ]
    for start, end, kind in faults:
        parts.append(
            f'<rect x="{x(start):.1f}" y="{TOP}" width="{max(x(end) - x(start), 1.0):.1f}" '
            f'height="{plot_h}" fill="#f4a261" fill-opacity="0.25"><title>{escape(kind)}</title></rect>'
        )
    for i in range(5):
        value = top * i / 4
        parts.append(
            f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" y2="{y(value):.1f}" '
            f'stroke="#ddd"/><text x="{LEFT - 5}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'fill="#555">{value:g}</text>'
        )
    minutes = span / 60
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120) if minutes / s <= 10)
    for m in range(0, int(minutes) + 1, step):
        parts.append(
            f'<text x="{x(m * 60):.1f}" y="{HEIGHT - 10}" text-anchor="middle" '
            f'fill="#555">{m} min</text>'
        )
    if points:
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline fill="none" stroke="#1d4e89" stroke-width="1.5" points="{line}"/>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(result: dict[str, Any], folder: Path) -> list[Path]:
    """soak.json (every figure and sample), soak.md and its charts; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "soak.json"]
    written[0].write_text(json.dumps(result, indent=1), encoding="utf-8")
    samples = result["samples"]
    began = result["began"]
    span = result["minutes"] * 60
    faults = [(f["started"] - began, f["ended"] - began, f["kind"]) for f in result["fault_log"]]
    lines = [
        f"# Soak: {result['minutes']:g} min on {result['database']}, seed {result['seed']}",
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {key} | {result.get(key)} |" for key in SUMMARY_KEYS],
        f"| faults | {', '.join(f'{k} {n}' for k, n in sorted(result['faults'].items()))} |",
        f"| violations | {len(result['violations'])} |",
        "",
        *[f"- {v}" for v in result["violations"]],
        "",
        "Shaded bands are faults (hover for the kind).",
        "",
    ]
    for key, title in SERIES.items():
        points = [(s["t"], s[key]) for s in samples if s.get(key) is not None]
        if not points:
            continue
        chart = folder / f"{key}.svg"
        chart.write_text(line_chart(title, points, faults, span), encoding="utf-8")
        written.append(chart)
        lines.append(f"![{title}]({chart.name})")
        lines.append("")
    page = folder / "soak.md"
    page.write_text("\n".join(lines), encoding="utf-8")
    written.append(page)
    return written
