"""The decision-latency benchmark runs end to end (its figures are printed, not asserted)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gate.config import load_settings
from gate.latency import measure_decision_latency
from tests.door_line import DoorLine


def test_every_timed_visitor_is_admitted_and_timed(data_dir: Path) -> None:
    figures = asyncio.run(measure_decision_latency(load_settings(data_dir=data_dir), visitors=3))
    assert figures["admitted"] == 3
    assert 0 < figures["p50_ms"] <= figures["max_ms"]
    print(figures)


def test_the_benchmark_leaves_the_real_door_and_entry_log_alone(
    tmp_path: Path, data_dir: Path, door_line: DoorLine
) -> None:
    """Run on an installed gate's settings, the timed visitors open only the emulated door:
    no byte reaches the configured serial port, and the gate's own database and snapshot
    folder stay untouched."""
    entry_log = tmp_path / "gate-own.db"
    settings = load_settings(
        data_dir=data_dir, database_url=f"sqlite:///{entry_log}", station={"port": door_line.port}
    )
    figures = asyncio.run(measure_decision_latency(settings, visitors=2))
    assert figures["admitted"] == 2
    assert door_line.received() == b""
    assert not entry_log.exists()
    assert sorted(p.name for p in data_dir.iterdir()) == ["models"]
