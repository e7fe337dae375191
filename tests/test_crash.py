"""SIGKILL the gate at random moments during a stream of visitors; nothing is lost or doubled.

The station emulator runs in its own process (it is the hardware) and logs
every unlock it executes with its entry reference. After the storm, every
executed unlock must belong to exactly one admitted entry, and no visitor may
have two entries.
"""

from __future__ import annotations

import json
import os
import random
import select as io_select
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import select

from gate.store.db import make_engine, session
from gate.store.models import Entry
from tests.crash_worker import PERIOD, READY

KILLS = 50
STARTUP_SHARE = 0.2
REPO = Path(__file__).resolve().parents[1]


def start_emulator(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    link, log = tmp_path / "station", tmp_path / "actuations.jsonl"
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gate",
            "station",
            "emulate",
            "--link",
            str(link),
            "--actuation-log",
            str(log),
            "--auto-door",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 30
    while not link.exists():
        assert emulator.poll() is None, "emulator died"
        assert time.monotonic() < deadline, "emulator did not start"
        time.sleep(0.05)
    return emulator, link, log


def wait_until_ready(worker: subprocess.Popen, timeout: float = 60) -> None:
    """Block until the worker prints that it runs (or fail with its stderr)."""
    ready, _, _ = io_select.select([worker.stdout], [], [], timeout)
    line = worker.stdout.readline().decode().strip() if ready else ""
    assert line == READY, f"worker not ready: {line!r} {worker.stderr.read().decode()[-500:]}"


def check_invariants(actuation_log: Path, database: Path, epoch: float) -> int:
    """Every executed unlock has exactly one admitted entry; no visitor has two entries.

    Returns how many distinct unlocks the station has executed so far.
    """
    lines = actuation_log.read_text().splitlines() if actuation_log.exists() else []
    refs = {
        u["ref"] for u in map(json.loads, filter(str.strip, lines)) if u["kind"] == "unlock"
    } - {0}
    engine = make_engine(f"sqlite:///{database}")
    with session(engine) as s:
        entries = list(s.scalars(select(Entry)))
    engine.dispose()
    by_ref = {e.unlock_ref: e for e in entries}
    for ref in refs:
        assert ref in by_ref, f"unlock {ref} executed with no entry logged"
        assert by_ref[ref].outcome == "admitted"
    visitor_of = Counter(
        int((e.seen_at.replace(tzinfo=UTC).timestamp() - epoch) // PERIOD) for e in entries
    )
    doubled = {v: n for v, n in visitor_of.items() if n > 1}
    assert not doubled, f"visitors with more than one entry: {doubled}"
    return len(refs)


@pytest.mark.slow
def test_sigkill_storm_loses_and_duplicates_no_admitted_visitor(
    tmp_path: Path, data_dir: Path
) -> None:
    emulator, link, actuation_log = start_emulator(tmp_path)
    database = data_dir / "gate.db"
    config = tmp_path / "gate.toml"
    config.write_text(
        f'gate_id = "crash"\ndata_dir = "{data_dir}"\n'
        f'[station]\nport = "{link}"\n'
        "[policy]\nsanitizer_required = false\nunlock_seconds = 1\nleave_seconds = 2.5\n",
        encoding="utf-8",
    )
    epoch = time.time() + 1
    rng = random.Random(20261127)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    command = [sys.executable, "-m", "tests.crash_worker", str(config), str(epoch)]
    startup_kills = 0
    try:
        for _ in range(KILLS):
            worker = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            # A fifth of the kills land while the process starts (imports, migrations,
            # station handshake); the rest at a random moment of its work, timed from
            # when it is ready, so a slow machine still sees visitors admitted.
            if rng.random() < STARTUP_SHARE:
                startup_kills += 1
                time.sleep(rng.uniform(0.1, 1.5))
            else:
                wait_until_ready(worker)
                time.sleep(rng.uniform(0.3, 5.0))
            assert worker.poll() is None, worker.stderr.read().decode()
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            if database.exists():  # checked after every restart-to-be, not just at the end
                check_invariants(actuation_log, database, epoch)
        # A last, undisturbed run lets the final visitor's visit conclude.
        worker = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        time.sleep(PERIOD * 2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0  # SIGTERM is a clean stop
    finally:
        emulator.kill()
        emulator.wait()
    admitted = check_invariants(actuation_log, database, epoch)
    print(
        f"{KILLS} SIGKILLs ({startup_kills} while starting), {admitted} unlocks executed, "
        "each with exactly one entry"
    )
    assert admitted >= 15, "too few admissions to mean anything"
