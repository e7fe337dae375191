"""`gate demo --json`: the scripted visitors, real models, emulated station, end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from gate.demo import DEMO_VISITORS, SCENARIO_SECONDS
from tests.door_line import DoorLine

REPO = Path(__file__).resolve().parents[1]

# Runs `gate` with the modules named in argv[1] made unimportable, as on a door's computer.
WITHOUT_MODULES = """
import runpy, sys
absent = set(sys.argv[1].split(","))
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in absent:
            raise ModuleNotFoundError(f"{name} belongs to the test tools")
sys.meta_path.insert(0, Absent())
sys.argv = ["gate", *sys.argv[2:]]
runpy.run_module("gate", run_name="__main__")
"""


def modules_of_test_extra() -> list[str]:
    """The top-level modules that the `[test]` extra installs (`make install EXTRAS=` omits it)."""

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = {
        canonical(re.split(r"[<>=!~;\[ ]", r)[0]) for r in project["optional-dependencies"]["test"]
    }
    return sorted(
        module
        for module, dists in packages_distributions().items()
        if any(canonical(d) in extra for d in dists)
    )


@pytest.mark.slow
def test_demo_run_matches_its_scenario(data_dir: Path, door_line: DoorLine) -> None:
    """Even on settings that name a camera and the door's serial line, the demo runs the
    simulated camera and the emulated station: not a byte reaches the door. It runs
    without the test tools, as a door installs none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    env |= {
        "GATE_DATA_DIR": str(data_dir),
        "GATE_CAMERA__SOURCE": "0",
        "GATE_STATION__PORT": door_line.port,
    }
    duration = SCENARIO_SECONDS + 8
    demo = ["demo", "--duration", str(duration), "--json"]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODULES, ",".join(modules_of_test_extra()), *demo],
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
