"""Entries page and CSV export against a million entries: prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_panel.py [--rows 1000000] [--database-url URL]

Seeds a fresh database (SQLite in a temporary folder unless --database-url
names another; it must be empty), then reports the p50/p95 of the entries-page
query under several filters (deep pages, and a quiet gate beside busy ones,
included) and the CSV export's throughput and memory, measured on the same
code paths the endpoints use.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert

from gate.server.csvexport import csv_chunks
from gate.server.queries import Cursor, EntryFilter, iter_entry_batches, list_entries
from gate.server.routers.entries import EXPORT_HEADER
from gate.store.db import open_database
from gate.store.models import Entry, Gate, Outcome

GATES = ("gate-1", "gate-2", "gate-3")
# One entry in a thousand comes through a quiet side gate, so that filtering it by a
# common outcome shows whether the planner walks that outcome across every gate.
QUIET_GATE, QUIET_EVERY = "gate-tz", 1000
OUTCOME_WEIGHTS = {
    Outcome.ADMITTED: 80,
    Outcome.DENIED_NO_MASK: 7,
    Outcome.DENIED_INCORRECT_MASK: 6,
    Outcome.NOT_SANITIZED: 4,
    Outcome.ADMITTED_REMINDED: 2,
    Outcome.LEFT_WAITING: 1,
}
END = datetime(2026, 11, 27, tzinfo=UTC)
SPAN = timedelta(days=365)
RUNS = 200
CASE_SECONDS = 20.0  # a slow case stops early instead of running 200 times


def seed(engine: Engine, rows: int, batch: int = 50_000) -> None:
    rng = random.Random(7)
    outcomes, weights = zip(*OUTCOME_WEIGHTS.items(), strict=True)
    with engine.begin() as connection:
        connection.execute(
            insert(Gate),
            [{"id": g, "name": g, "created_at": END} for g in (*GATES, QUIET_GATE)],
        )
    started = time.perf_counter()
    for offset in range(0, rows, batch):
        chunk = []
        for i in range(offset, min(rows, offset + batch)):
            outcome = rng.choices(outcomes, weights)[0]
            seen = END - SPAN * rng.random()
            chunk.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "gate_id": QUIET_GATE if i % QUIET_EVERY == 0 else GATES[i % len(GATES)],
                    "unlock_ref": i // len(GATES),
                    "outcome": outcome.value,
                    "mask_label": "mask",
                    "mask_score": 0.93,
                    "first_label": None,
                    "sanitized": outcome.admitted,
                    "door_opened": outcome.admitted,
                    "snapshot_path": None,
                    "seen_at": seen,
                    "decided_at": seen + timedelta(seconds=1),
                }
            )
        with engine.begin() as connection:
            connection.execute(insert(Entry), chunk)
    print(f"seeded {rows:,} entries in {time.perf_counter() - started:.0f} s")


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"p50 {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms"


def bench_queries(engine: Engine) -> None:
    rng = random.Random(11)

    def window(days: int) -> tuple[datetime, datetime]:
        start = END - SPAN + (SPAN - timedelta(days=days)) * rng.random()
        return start, start + timedelta(days=days)

    cases = {
        "no filter, first page": lambda: (EntryFilter(), None),
        "outcome + 30 days": lambda: (EntryFilter(*window(30), Outcome.DENIED_NO_MASK), None),
        "gate + 7 days": lambda: (EntryFilter(*window(7), None, rng.choice(GATES)), None),
        "outcome + gate + 30 days": lambda: (
            EntryFilter(*window(30), Outcome.NOT_SANITIZED, rng.choice(GATES)),
            None,
        ),
        "rare outcome, whole year": lambda: (EntryFilter(outcome=Outcome.LEFT_WAITING), None),
        "deep page (random cursor)": lambda: (
            EntryFilter(),
            Cursor(END - SPAN * rng.random(), str(uuid.uuid4())),
        ),
        "outcome, deep page": lambda: (
            EntryFilter(outcome=Outcome.DENIED_INCORRECT_MASK),
            Cursor(END - SPAN * rng.random(), str(uuid.uuid4())),
        ),
        "quiet gate": lambda: (EntryFilter(gate_id=QUIET_GATE), None),
        "quiet gate + admitted": lambda: (
            EntryFilter(outcome=Outcome.ADMITTED, gate_id=QUIET_GATE),
            None,
        ),
        "quiet gate + admitted, deep": lambda: (
            EntryFilter(outcome=Outcome.ADMITTED, gate_id=QUIET_GATE),
            Cursor(END - SPAN * rng.random(), str(uuid.uuid4())),
        ),
        "quiet gate + rare outcome": lambda: (
            EntryFilter(outcome=Outcome.LEFT_WAITING, gate_id=QUIET_GATE),
            None,
        ),
    }
    print(f"entries-page query, 50 rows, {RUNS} runs each (fewer past {CASE_SECONDS:.0f} s):")
    for name, make in cases.items():
        samples: list[float] = []
        while len(samples) < RUNS and sum(samples) < CASE_SECONDS * 1000:
            flt, cursor = make()
            started = time.perf_counter()
            list_entries(engine, flt, 50, before=cursor)
            samples.append((time.perf_counter() - started) * 1000)
        print(f"  {name:<28} {percentiles(samples)}   ({len(samples)} runs)")


def bench_export(engine: Engine) -> None:
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    rss_before = peak = current_rss_mb()
    rows = 0

    def counting(batches: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
        nonlocal rows
        for batch in batches:
            rows += len(batch)
            yield batch

    started = time.perf_counter()
    size = 0
    for chunk in csv_chunks(
        EXPORT_HEADER, counting(iter_entry_batches(engine, EntryFilter())), zone
    ):
        size += len(chunk)
        peak = max(peak, current_rss_mb())
    elapsed = time.perf_counter() - started
    grown = peak - rss_before
    print(
        f"CSV export: {rows:,} rows, {size / 1e6:.0f} MB in {elapsed:.1f} s = "
        f"{rows / elapsed:,.0f} rows/s; RSS during export at most {grown:.0f} MB above start"
    )


def current_rss_mb() -> float:
    """Resident memory now (not the lifetime peak, which the seeding already set)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        engine = open_database(url)
        seed(engine, args.rows)
        bench_queries(engine)
        bench_export(engine)
        engine.dispose()


if __name__ == "__main__":
    main()
