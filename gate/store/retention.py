"""Retention: forget old snapshots and entries, and write down what went."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from gate.config import Settings
from gate.store.records import audit_detail, purge_old, record_audit

log = logging.getLogger("gate.retention")


def apply_retention(engine: Engine, settings: Settings) -> tuple[int, int]:
    """Delete what of this gate is past its age; return (entries deleted, snapshot files
    deleted). Other gates sharing the database run their own retention."""
    retention, gate_id = settings.retention, settings.gate_id
    paths, entries = purge_old(engine, gate_id, retention.snapshot_days, retention.entry_days)
    snapshots = sum(_delete(path) for path in set(paths))
    today = datetime.now(UTC).date()
    snapshots += _sweep_day_folders(settings.snapshots_dir, retention.snapshot_days, today)
    if entries or snapshots:
        log.info("retention: deleted %d entries and %d snapshots", entries, snapshots)
        detail = audit_detail(gate=gate_id, entries=entries, snapshots=snapshots)
        record_audit(engine, "system", "retention", "", detail, gate_id)
    return entries, snapshots


def _delete(path: Path) -> bool:
    """One stuck file must not stop the job, or the gate, whose loops end it when they die."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("retention: snapshot %s not deleted: %s", path, exc.strerror)
        return False
    return True


def _sweep_day_folders(snapshots_dir: Path, snapshot_days: int, today: date) -> int:
    """Empty and remove the day folders whose every picture is past its age.

    Entries lose their snapshot reference before the file goes, so a file that could
    not be deleted then, or one no entry ever referred to, is still caught here.
    """
    deleted = 0
    for folder in sorted(snapshots_dir.glob("????-??-??")):
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if day >= today - timedelta(days=snapshot_days) or not folder.is_dir():
            continue
        deleted += sum(_delete(path) for path in folder.iterdir())
        with contextlib.suppress(OSError):  # still holds what could not be deleted
            folder.rmdir()
    return deleted
