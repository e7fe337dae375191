"""The decision-latency benchmark runs end to end (its figures are printed, not asserted)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gate.config import load_settings
from gate.latency import measure_decision_latency


def test_every_timed_visitor_is_admitted_and_timed(data_dir: Path) -> None:
    figures = asyncio.run(measure_decision_latency(load_settings(data_dir=data_dir), visitors=3))
    assert figures["admitted"] == 3
    assert 0 < figures["p50_ms"] <= figures["max_ms"]
    print(figures)


def test_the_benchmark_leaves_the_real_door_and_entry_log_alone(
    tmp_path: Path, data_dir: Path
) -> None:
    """Run on an installed gate's settings, the timed visitors open only the emulated door:
    no byte reaches the configured serial port, and the gate's own database and snapshot
    folder stay untouched."""
    door, door_port = os.openpty()  # the door's serial line, as a real install configures it
    os.set_blocking(door, False)
    entry_log = tmp_path / "gate-own.db"
    settings = load_settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{entry_log}",
        station={"port": os.ttyname(door_port)},
    )
    try:
        figures = asyncio.run(measure_decision_latency(settings, visitors=2))
        try:
            reached_door = os.read(door, 4096)
        except BlockingIOError:
            reached_door = b""
    finally:
        os.close(door)
        os.close(door_port)
    assert figures["admitted"] == 2
    assert reached_door == b""
    assert not entry_log.exists()
    assert sorted(p.name for p in data_dir.iterdir()) == ["models"]
