"""Retention: forget old snapshots and entries, and write down what went."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from gate.config import RetentionSettings
from gate.store.records import purge_old, record_audit

log = logging.getLogger("gate.retention")


def apply_retention(engine: Engine, retention: RetentionSettings, gate_id: str) -> tuple[int, int]:
    """Delete what is past its age; return (entries deleted, snapshot files deleted)."""
    paths, entries = purge_old(engine, retention.snapshot_days, retention.entry_days)
    for path in set(paths):
        path.unlink(missing_ok=True)
    snapshots = len(set(paths))
    if entries or snapshots:
        detail = f"deleted {entries} entries and {snapshots} snapshots"
        log.info("retention: %s", detail)
        record_audit(engine, "system", "retention", "", detail, gate_id)
    return entries, snapshots
