"""The log store on real SQLite and real PostgreSQL: upserts, recovery queries, retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from gate.config import Settings
from gate.store import records
from gate.store.db import make_engine, session, table_names, upgrade
from gate.store.models import AuditEvent, Entry, Outcome
from gate.store.retention import apply_retention

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def entry(ref: int, outcome: Outcome, seen: datetime = NOW, **fields: object) -> Entry:
    return Entry(gate_id="g1", unlock_ref=ref, outcome=outcome.value, seen_at=seen, **fields)


def test_migrations_create_every_table(engine: Engine) -> None:
    assert {"entry", "alert", "auditevent", "user", "gate", "stationlog", "revokedsession"} <= set(
        table_names(engine)
    )
    upgrade(engine)  # running again is a no-op, as at every start


def test_save_entry_inserts_then_updates_the_same_row(engine: Engine) -> None:
    records.ensure_gate(engine, "g1")
    e = entry(7, Outcome.PENDING)
    records.save_entry(engine, e)
    records.set_snapshot(engine, e.id, "/data/snap.jpg")
    later = e.model_copy(update={"outcome": Outcome.ADMITTED.value, "unlocked_at": NOW})
    records.save_entry(engine, later)
    (row,) = records.entries_since(engine, "g1", NOW - timedelta(hours=1))
    assert row.outcome == "admitted"
    assert row.unlocked_at is not None
    assert row.snapshot_path == "/data/snap.jpg"  # an update never drops the snapshot


def test_open_entries_are_what_a_crash_left_unfinished(engine: Engine) -> None:
    records.ensure_gate(engine, "g1")
    records.save_entry(engine, entry(1, Outcome.ADMITTED, finished_at=NOW))
    open_one = entry(2, Outcome.PENDING)
    records.save_entry(engine, open_one)
    assert [e.id for e in records.open_entries(engine, "g1")] == [open_one.id]


def test_occupancy_counts_admissions_and_overrides_minus_exits_since_reset(engine: Engine) -> None:
    records.ensure_gate(engine, "g1")
    for ref in (1, 2, 3):
        records.save_entry(engine, entry(ref, Outcome.ADMITTED, unlocked_at=datetime.now(UTC)))
    records.save_entry(engine, entry(4, Outcome.DENIED_NO_MASK))
    records.log_station(engine, "g1", "exit")
    records.log_station(engine, "g1", "override_unlock")
    assert records.occupancy(engine, "g1") == 3
    records.log_station(engine, "g1", records.OCCUPANCY_RESET)
    assert records.occupancy(engine, "g1") == 0
    records.log_station(engine, "g1", "exit")
    assert records.occupancy(engine, "g1") == 0  # never negative


def test_retention_deletes_old_snapshots_and_entries(engine: Engine, tmp_path: Path) -> None:
    records.ensure_gate(engine, "g1")
    old_snap, new_snap = tmp_path / "old.jpg", tmp_path / "new.jpg"
    ancient = entry(1, Outcome.DENIED_NO_MASK, NOW - timedelta(days=400))
    week_old = entry(2, Outcome.DENIED_NO_MASK, NOW - timedelta(days=10))
    fresh = entry(3, Outcome.DENIED_NO_MASK, NOW - timedelta(hours=1))
    for e, snap in ((ancient, old_snap), (week_old, old_snap), (fresh, new_snap)):
        e.snapshot_path = str(snap)
        records.save_entry(engine, e)
        records.set_snapshot(engine, e.id, str(snap))
    paths, deleted = records.purge_old(engine, snapshot_days=7, entry_days=365, now=NOW)
    assert deleted == 1
    assert set(paths) == {old_snap}
    kept = {e.unlock_ref: e for e in records.entries_since(engine, "g1", NOW - timedelta(days=500))}
    assert set(kept) == {2, 3}
    assert kept[2].snapshot_path is None and kept[3].snapshot_path == str(new_snap)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with eng.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def retention_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, retention={"snapshot_days": 7, "entry_days": 20})


def test_retention_job_deletes_files_and_audits_what_it_deleted(
    engine: Engine, tmp_path: Path
) -> None:
    records.ensure_gate(engine, "g1")
    snap = tmp_path / "old.jpg"
    snap.write_bytes(b"jpeg")
    old = entry(1, Outcome.DENIED_NO_MASK, datetime.now(UTC) - timedelta(days=30))
    records.save_entry(engine, old)
    records.set_snapshot(engine, old.id, str(snap))
    settings = retention_settings(tmp_path).model_copy(update={"gate_id": "g1"})
    assert apply_retention(engine, settings) == (1, 1)
    assert not snap.exists()
    with session(engine) as s:
        (audit,) = s.scalars(select(AuditEvent).where(AuditEvent.action == "retention"))
    assert json.loads(audit.detail) == {"entries": 1, "snapshots": 1} and audit.actor == "system"
    assert audit.gate_id == "g1"
    assert apply_retention(engine, settings) == (0, 0)


def test_a_snapshot_that_cannot_be_deleted_does_not_stop_retention(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The runtime ends when one of its loops dies, so a stuck file (here a folder where
    the picture should be, which even root cannot unlink) is logged and passed over."""
    records.ensure_gate(engine, "g1")
    stuck, fine = tmp_path / "stuck.jpg", tmp_path / "fine.jpg"
    (stuck / "inside").mkdir(parents=True)
    fine.write_bytes(b"jpeg")
    for ref, snap in ((1, stuck), (2, fine)):
        old = entry(ref, Outcome.DENIED_NO_MASK, datetime.now(UTC) - timedelta(days=30))
        records.save_entry(engine, old)
        records.set_snapshot(engine, old.id, str(snap))
    assert apply_retention(engine, retention_settings(tmp_path)) == (2, 1)
    assert not fine.exists() and stuck.is_dir()
    assert f"snapshot {stuck} not deleted" in caplog.text


def test_retention_also_clears_day_folders_past_the_age_of_pictures_no_entry_names(
    engine: Engine, tmp_path: Path
) -> None:
    """A picture whose entry let go of it (its file stuck at the time, or never referred
    to) must not stay forever: whole day folders past the snapshot age are emptied."""
    today = datetime.now(UTC).date()
    snapshots = tmp_path / "snapshots"
    days = {age: snapshots / (today - timedelta(days=age)).isoformat() for age in (6, 7, 8, 30)}
    for folder in days.values():
        folder.mkdir(parents=True)
        (folder / "orphan.jpg").write_bytes(b"jpeg")
    (snapshots / "not-a-day").mkdir()
    (snapshots / "not-a-day" / "keep.jpg").write_bytes(b"jpeg")
    assert apply_retention(engine, retention_settings(tmp_path)) == (0, 2)
    left = sorted(p.name for p in snapshots.iterdir())
    assert left == sorted([days[6].name, days[7].name, "not-a-day"])  # day 7 reaches back 7 days
    assert (days[7] / "orphan.jpg").exists() and (days[6] / "orphan.jpg").exists()
