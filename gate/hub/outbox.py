"""The gate's side of replication, in its own store: what is still to send, and where
this gate stands with the hub (the `hubcursor` rows).

Records are read as they are now, not as they were at each write: the hub keeps the
newest version anyway, and the version sent is the newest outbox number the batch
holds for that record, so a later write of the same record is never undone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select
from sqlmodel import SQLModel

from gate.store.db import session
from gate.store.models import Alert, AuditEvent, Entry, HubCursor, Outbox, StationLog

KIND_MODELS: dict[str, type[SQLModel]] = {
    "entry": Entry,
    "alert": Alert,
    "audit": AuditEvent,
    "station": StationLog,
}
ACKED = "acked"  # the outbox position the hub holds everything up to
ORDERS_APPLIED = "orders"  # the last hub order carried out here
ORDERS_ACKED = "orders_acked"  # the last hub order the hub knows was carried out
KEEP_SENT_SECONDS = 7 * 86400  # sent rows kept a week: a hub restored from backup can ask again


@dataclass(frozen=True)
class PendingBatch:
    from_seq: int
    to_seq: int
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class Backlog:
    records: int
    lag_s: float


def _ours(gate_id: str) -> Any:
    # Rows without a gate (a panel login) are this gate's too: its store is its own.
    return or_(Outbox.gate_id == gate_id, Outbox.gate_id.is_(None))  # type: ignore[union-attr]


def get_cursor(engine: Engine, name: str) -> int:
    with session(engine) as s:
        row = s.get(HubCursor, name)
        return row.value if row else 0


def set_cursor(engine: Engine, name: str, value: int) -> None:
    with session(engine) as s:
        s.merge(HubCursor(name=name, value=value))
        s.commit()


def read_batch(engine: Engine, gate_id: str, after: int, limit: int) -> PendingBatch:
    """The next `limit` outbox rows past `after`, as records to send (deleted ones left out)."""
    with session(engine) as s:
        rows = s.execute(
            select(Outbox.seq, Outbox.kind, Outbox.record_id)
            .where(Outbox.seq > after, _ours(gate_id))  # type: ignore[operator]
            .order_by(Outbox.seq)  # type: ignore[arg-type]
            .limit(limit)
        ).all()
        if not rows:
            return PendingBatch(after, after, [])
        newest: dict[tuple[str, str], int] = {}
        for seq, kind, record_id in rows:
            newest[(kind, record_id)] = seq
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, model in KIND_MODELS.items():
            ids = [rid for (k, rid) in newest if k == kind]
            if not ids:
                continue
            key = model.id  # type: ignore[attr-defined]
            wanted = ids if kind == "entry" else [int(i) for i in ids]
            for row in s.scalars(select(model).where(key.in_(wanted))):
                found[(kind, str(row.id))] = row.model_dump(mode="json")  # type: ignore[attr-defined]
    records = [
        {"seq": seq, "kind": kind, "id": record_id, "data": found[(kind, record_id)]}
        for (kind, record_id), seq in sorted(newest.items(), key=lambda item: item[1])
        if (kind, record_id) in found
    ]
    return PendingBatch(after, rows[-1][0], records)


def backlog(engine: Engine, gate_id: str, after: int, now: float | None = None) -> Backlog:
    """Writes not yet at the hub, and how long the oldest of them has waited."""
    with session(engine) as s:
        count, oldest = s.execute(
            select(func.count(), func.min(Outbox.at)).where(Outbox.seq > after, _ours(gate_id))  # type: ignore[operator]
        ).one()
    now = time.time() if now is None else now
    return Backlog(count or 0, max(0.0, now - oldest) if oldest is not None else 0.0)


def drop_sent(engine: Engine, gate_id: str, upto: int, now: float | None = None) -> None:
    now = time.time() if now is None else now
    with session(engine) as s:
        s.execute(
            delete(Outbox).where(
                Outbox.seq <= upto,  # type: ignore[operator]
                Outbox.at < now - KEEP_SENT_SECONDS,
                _ours(gate_id),
            )
        )
        s.commit()
