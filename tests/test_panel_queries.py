"""The panel's hand-written queries on both databases (the `engine` fixture: SQLite, PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert, select, text

from gate.server import statistics
from gate.server.queries import LIST_COLUMNS, EntryFilter, iter_entry_batches, list_entries
from gate.store.db import make_engine, upgrade
from gate.store.models import Entry, Gate, Outcome, StationLog

START = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def test_paging_filters_and_hour_buckets(engine: Engine) -> None:
    rows = [
        {
            "id": str(uuid.uuid4()),
            "gate_id": "gate-1",
            "unlock_ref": i,
            "outcome": (Outcome.ADMITTED if i % 3 else Outcome.DENIED_NO_MASK).value,
            "mask_label": "mask" if i % 3 else "no_mask",
            "sanitized": False,
            "door_opened": False,
            "seen_at": START + timedelta(minutes=10 * (i // 2)),
        }
        for i in range(60)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Gate), [{"id": "gate-1", "name": "", "created_at": START}])
        connection.execute(insert(Entry), rows)
        connection.execute(
            insert(StationLog),
            [{"gate_id": "gate-1", "at": START + timedelta(minutes=5), "kind": "dispensed"}],
        )
    expected = [r["id"] for r in sorted(rows, key=lambda r: (r["seen_at"], r["id"]), reverse=True)]
    walked, cursor = [], None
    while True:
        page = list_entries(engine, EntryFilter(), 7, before=cursor)
        walked += [r.id for r in page.rows]
        if page.older is None:
            break
        cursor = page.older
    assert walked == expected
    denied = EntryFilter(START, START + timedelta(hours=2), Outcome.DENIED_NO_MASK, "gate-1")
    assert len(list_entries(engine, denied, 100).rows) == sum(1 for i in range(24) if i % 3 == 0)
    assert sum(len(b) for b in iter_entry_batches(engine, EntryFilter(), 25)) == 60
    stats = statistics.compute(engine, date(2026, 11, 20), 7, ZoneInfo("Asia/Ho_Chi_Minh"), None)
    assert stats.hourly["admitted"][8] + stats.hourly["denied"][8] == 12  # 01:00 UTC = 08:00
    assert stats.total == 60 and stats.doses[-1] == 1
    assert stats.occupancy[-1] == 40


def test_gate_and_outcome_together_seek_one_index(tmp_path: Path) -> None:
    """Not timed: SQLite's plan for a gate filtered by an outcome seeks on both, rather
    than walking the outcome's rows at every gate (seconds per page at a quiet gate)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    upgrade(engine)
    flt = EntryFilter(START, None, Outcome.ADMITTED, "gate-tz")
    query = select(*LIST_COLUMNS).where(*flt.clauses()).order_by(Entry.seen_at.desc()).limit(51)
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        plan = [row[-1] for row in connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    assert "INDEX ix_entry_gate_outcome_seen (gate_id=? AND outcome=? AND seen_at>?)" in plan[0]
