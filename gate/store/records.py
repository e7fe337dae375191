"""Writing and reading what the runtime needs: entries, alerts, audit, station log.

Each function is one short transaction, so a crash loses at most the write in
flight and never leaves half of one.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from gate.store.db import session
from gate.store.models import (
    Alert,
    AuditEvent,
    Entry,
    Gate,
    Outcome,
    StationLog,
    as_utc,
    utcnow,
)

Row = TypeVar("Row", bound=SQLModel)
ADMITTED = [Outcome.ADMITTED.value, Outcome.ADMITTED_REMINDED.value]
OCCUPANCY_RESET = "occupancy_reset"
# The INSERT with ON CONFLICT of each database the gate runs on.
UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def ensure_gate(engine: Engine, gate_id: str) -> None:
    with session(engine) as s:
        gate = s.get(Gate, gate_id) or Gate(id=gate_id, name=gate_id)
        gate.last_seen_at = utcnow()
        s.add(gate)
        s.commit()


def save_entry(engine: Engine, entry: Entry) -> None:
    """Insert or update one entry by id (the controller sends whole snapshots).

    One INSERT ... ON CONFLICT UPDATE, not a read then a write: an entry deleted while
    its visit goes on (retention, an admin) is written again, so the visit stays on
    record, instead of the update finding no row and the gate dying of StaleDataError.
    An update keeps the snapshot path, which `set_snapshot` writes on its own.
    """
    row = entry.model_dump()
    upsert = UPSERTS[engine.dialect.name](Entry).values(row)
    kept = {"id", "snapshot_path"}
    upsert = upsert.on_conflict_do_update(
        index_elements=[Entry.id],
        set_={name: upsert.excluded[name] for name in row if name not in kept},
    )
    with session(engine) as s:
        s.execute(upsert)
        s.commit()


def set_snapshot(engine: Engine, entry_id: str, path: str) -> None:
    with session(engine) as s:
        s.execute(update(Entry).where(Entry.id == entry_id).values(snapshot_path=path))
        s.commit()


def open_entries(engine: Engine, gate_id: str) -> list[Entry]:
    """Visits a previous run left unfinished (it stopped or crashed mid-visit)."""
    with session(engine) as s:
        query = select(Entry).where(Entry.gate_id == gate_id, Entry.finished_at.is_(None))
        return list(s.scalars(query))


def entries_since(engine: Engine, gate_id: str, since: datetime) -> list[Entry]:
    with session(engine) as s:
        query = (
            select(Entry)
            .where(Entry.gate_id == gate_id, Entry.seen_at >= since)
            .order_by(Entry.seen_at)
        )
        return list(s.scalars(query))


def occupancy(engine: Engine, gate_id: str, day_start: datetime) -> int:
    """People inside: admissions minus exits since the day began, or since a manual
    reset later that day.

    Counting starts afresh each day because not everyone who leaves presses the exit
    button (the door opens from inside), so the count only ever drifts upwards.
    """
    with session(engine) as s:
        reset_at = s.scalar(
            select(func.max(StationLog.at)).where(
                StationLog.gate_id == gate_id, StationLog.kind == OCCUPANCY_RESET
            )
        )
        since = max(day_start, as_utc(reset_at)) if reset_at is not None else day_start
        admitted = s.scalar(
            select(func.count())
            .select_from(Entry)
            .where(Entry.gate_id == gate_id, Entry.outcome.in_(ADMITTED), Entry.unlocked_at > since)
        )
        logged = dict(
            s.execute(
                select(StationLog.kind, func.count())
                .where(StationLog.gate_id == gate_id, StationLog.at > since)
                .where(StationLog.kind.in_(["exit", "override_unlock"]))
                .group_by(StationLog.kind)
            ).all()
        )
    # A staff override lets one person in, so it counts as an admission too.
    inside = (admitted or 0) + logged.get("override_unlock", 0) - logged.get("exit", 0)
    return max(0, inside)


def log_station(engine: Engine, gate_id: str, kind: str, value: int | None = None) -> None:
    with session(engine) as s:
        s.add(StationLog(gate_id=gate_id, kind=kind, value=value))
        s.commit()


def raise_alert(
    engine: Engine, gate_id: str, kind: str, severity: str, message: str, entry_id: str | None
) -> Alert:
    alert = Alert(gate_id=gate_id, kind=kind, severity=severity, message=message, entry_id=entry_id)
    return _insert(engine, alert)


def audit_detail(**fields: object) -> str:
    """An audit row's detail as JSON fields, so the panel can show it in the reader's
    language; a spreadsheet or a `sqlite3` shell still reads it as text."""
    return json.dumps(fields, ensure_ascii=False, separators=(", ", ": "))


def record_audit(
    engine: Engine,
    actor: str,
    action: str,
    reason: str = "",
    detail: str = "",
    gate_id: str | None = None,
) -> AuditEvent:
    event = AuditEvent(actor=actor, action=action, reason=reason, detail=detail, gate_id=gate_id)
    return _insert(engine, event)


# Staff orders that stand until lifted, each with the audit actions that set and lift it.
STANDING_ORDERS = (("lockdown_on", "lockdown_off"), ("emergency_on", "emergency_off"))


def standing_orders(engine: Engine, gate_id: str) -> list[AuditEvent]:
    """The audit events of the staff orders (lockdown, emergency release) still in force at
    this gate: those whose latest setting or lifting was a setting.

    Latest by id, the order of writing, not by time: a clock set back (NTP fixing a
    clock that ran ahead) would date a lifting before the order it lifted.
    """
    standing = []
    with session(engine) as s:
        for pair in STANDING_ORDERS:
            latest = s.scalars(
                select(AuditEvent)
                .where(AuditEvent.gate_id == gate_id, AuditEvent.action.in_(pair))
                .order_by(AuditEvent.id.desc())  # type: ignore[union-attr]
                .limit(1)
            ).first()
            if latest is not None and latest.action == pair[0]:
                standing.append(latest)
    return standing


def _insert(engine: Engine, row: Row) -> Row:
    """Insert one row and return it with its new id."""
    with session(engine) as s:
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def purge_old(
    engine: Engine,
    gate_id: str,
    snapshot_days: int,
    entry_days: int,
    now: datetime | None = None,
) -> tuple[list[Path], int]:
    """Retention for one gate: forget its snapshots and entries past their age.

    Only this gate's rows: gates sharing a database each keep their own retention
    settings, and another gate's snapshot paths name files on another computer.
    Returns the snapshot files whose references were cleared (the caller deletes
    them) and the number of entries deleted.
    """
    now = now or utcnow()
    snapshot_cutoff = now - timedelta(days=snapshot_days)
    entry_cutoff = now - timedelta(days=entry_days)
    ours = Entry.gate_id == gate_id
    with session(engine) as s:
        old_snapshots = select(Entry.id, Entry.snapshot_path).where(
            ours, Entry.snapshot_path.is_not(None), Entry.seen_at < snapshot_cutoff
        )
        rows = s.execute(old_snapshots).all()
        paths = [Path(p) for _, p in rows if p]
        if rows:
            s.execute(
                update(Entry).where(Entry.id.in_([i for i, _ in rows])).values(snapshot_path=None)
            )
        paths += [
            Path(p)
            for p in s.scalars(
                select(Entry.snapshot_path).where(
                    ours, Entry.seen_at < entry_cutoff, Entry.snapshot_path.is_not(None)
                )
            )
        ]
        deleted = s.execute(delete(Entry).where(ours, Entry.seen_at < entry_cutoff)).rowcount
        s.commit()
    return paths, deleted or 0
