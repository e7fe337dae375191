"""The decision-latency benchmark runs end to end (its figures are printed, not asserted)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gate.config import load_settings
from gate.latency import measure_decision_latency


def test_every_timed_visitor_is_admitted_and_timed(data_dir: Path) -> None:
    figures = asyncio.run(measure_decision_latency(load_settings(data_dir=data_dir), visitors=3))
    assert figures["admitted"] == 3
    assert 0 < figures["p50_ms"] <= figures["max_ms"]
    print(figures)
