"""The 5-minute soak: the real gate process under every kind of fault the schedule can fit
in five minutes, on SQLite and on a PostgreSQL server of its own, with the invariants of
the long soak. Its figures are printed (see -s), not asserted: they are the evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gate.soak.faults import FAULT_KINDS

REPO = Path(__file__).resolve().parents[1]
KEYS = {
    "minutes", "visitors", "faults", "violations", "rss_slope_mb_per_h", "fd_growth",
    "thread_growth", "wal_max_mb", "latency_p95_first_ms", "latency_p95_last_ms", "database",
}  # fmt: skip
MINUTES = 5
# Every kind once takes longer than five minutes (a door held open alone takes 30 s, a
# restarted gate loads its models again, 1-2 min on a busy machine); the long soaks cover
# each kind many times. A busy build machine fitted 7 kinds.
KINDS_IN_FIVE_MINUTES = 6


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_five_minute_soak_holds_every_invariant(
    database: str, data_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    env["GATE_DATA_DIR"] = str(data_dir)
    report = tmp_path / "report"
    command = ["soak", "--minutes", str(MINUTES), "--database", database, "--seed", "7"]
    result = subprocess.run(
        [sys.executable, "-m", "gate", *command, "--json", "--report", str(report)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=MINUTES * 60 + 400,
    )
    print(result.stderr)
    print(result.stdout)
    figures = json.loads(result.stdout)
    assert set(figures) >= KEYS
    assert figures["violations"] == []
    assert result.returncode == 0
    assert figures["database"] == database
    assert figures["visitors"] >= 30
    # How many visitors get an entry depends on the CPU the gate gets (a busy machine
    # starves it: see masked_unlogged_while_starved); that it decides and unlocks does not.
    assert figures["entries"] > 0 and figures["unlocks"] > 0
    kinds = {k.name for k in FAULT_KINDS if database == "postgresql" or not k.postgres_only}
    assert set(figures["faults"]) <= kinds
    assert len(figures["faults"]) >= KINDS_IN_FIVE_MINUTES, figures["faults"]
    written = json.loads((report / "soak.json").read_text())
    assert written["samples"] and written["fault_log"]
    assert (report / "gate_rss_mb.svg").read_text().startswith("<svg")
    assert "gate_rss_mb.svg" in (report / "soak.md").read_text()
