"""`gate demo --json`: the scripted visitors, real models, emulated station, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gate.demo import DEMO_VISITORS, SCENARIO_SECONDS
from tests.door_line import DoorLine

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_run_matches_its_scenario(data_dir: Path, door_line: DoorLine) -> None:
    """Even on settings that name a camera and the door's serial line, the demo runs the
    simulated camera and the emulated station: not a byte reaches the door."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    env |= {
        "GATE_DATA_DIR": str(data_dir),
        "GATE_CAMERA__SOURCE": "0",
        "GATE_STATION__PORT": door_line.port,
    }
    duration = SCENARIO_SECONDS + 8
    result = subprocess.run(
        [sys.executable, "-m", "gate", "demo", "--duration", str(duration), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=duration + 120,
    )
    assert door_line.received() == b""
    report = json.loads(result.stdout)
    assert report["scenario"] == [v.expected.value for v in DEMO_VISITORS]
    assert report["entries"] == report["scenario"], result.stderr
    assert result.returncode == 0
    assert report["counts"] == {
        "admitted": 2,
        "denied_no_mask": 1,
        "denied_incorrect_mask": 1,
        "not_sanitized": 1,
    }
