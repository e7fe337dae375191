"""Retention: forget old snapshots and entries, and write down what went."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from gate.config import RetentionSettings
from gate.store.records import audit_detail, purge_old, record_audit

log = logging.getLogger("gate.retention")


def apply_retention(engine: Engine, retention: RetentionSettings, gate_id: str) -> tuple[int, int]:
    """Delete what is past its age; return (entries deleted, snapshot files deleted)."""
    paths, entries = purge_old(engine, retention.snapshot_days, retention.entry_days)
    snapshots = 0
    for path in set(paths):
        try:
            path.unlink(missing_ok=True)
            snapshots += 1
        except OSError as exc:  # one stuck file must not stop the job (or the gate) for good
            log.warning("retention: snapshot %s not deleted: %s", path, exc.strerror)
    if entries or snapshots:
        log.info("retention: deleted %d entries and %d snapshots", entries, snapshots)
        detail = audit_detail(entries=entries, snapshots=snapshots)
        record_audit(engine, "system", "retention", "", detail, gate_id)
    return entries, snapshots
