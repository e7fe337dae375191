"""What the hub panel reads: the doors and their last reports, and the records of all.

Each view can be narrowed to one centre (a building) and, where it lists records,
to one door.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.sql import ColumnElement

from gate.hub.models import HubGate, HubRecord, RecordKind
from gate.store.db import session
from gate.store.models import AuditEvent, Outcome, as_utc

ADMITTED = [Outcome.ADMITTED.value, Outcome.ADMITTED_REMINDED.value]


@dataclass
class Door:
    gate: HubGate
    online: bool
    admitted_today: int = 0
    denied_today: int = 0

    @property
    def status(self) -> dict[str, Any]:
        return self.gate.status or {}


@dataclass
class Centre:
    name: str
    doors: list[Door] = field(default_factory=list)

    @property
    def occupancy(self) -> int:
        """People inside the building: the sum over its doors' own counts."""
        return sum(d.status.get("occupancy") or 0 for d in self.doors)


def overview(
    engine: Engine, day_start: datetime, offline_after: float, centre: str | None = None
) -> list[Centre]:
    now = datetime.now(UTC)
    with session(engine) as s:
        query = select(HubGate).order_by(HubGate.centre, HubGate.id)
        if centre is not None:
            query = query.where(HubGate.centre == centre)
        gates = list(s.scalars(query))
        outcome = HubRecord.data["outcome"].as_string()
        counts = s.execute(
            select(HubRecord.gate_id, outcome, func.count())
            .where(HubRecord.kind == RecordKind.ENTRY.value, HubRecord.at >= day_start)
            .group_by(HubRecord.gate_id, outcome)
        ).all()
    centres: dict[str, Centre] = {}
    doors: dict[str, Door] = {}
    for gate in gates:
        seen = gate.last_report_at
        online = seen is not None and (now - as_utc(seen)).total_seconds() < offline_after
        door = doors[gate.id] = Door(gate, online)
        centres.setdefault(gate.centre, Centre(gate.centre)).doors.append(door)
    for gate_id, result, count in counts:
        if gate_id in doors and result in ADMITTED:
            doors[gate_id].admitted_today += count
        elif gate_id in doors and result and result.startswith("denied"):
            doors[gate_id].denied_today += count
    return list(centres.values())


def centres(engine: Engine) -> list[str]:
    with session(engine) as s:
        return list(s.scalars(select(HubGate.centre).distinct().order_by(HubGate.centre)))


def gate_ids(engine: Engine, centre: str | None = None) -> list[str]:
    with session(engine) as s:
        query = select(HubGate.id).order_by(HubGate.id)
        if centre is not None:
            query = query.where(HubGate.centre == centre)
        return list(s.scalars(query))


def _where(kind: RecordKind, gates: Sequence[str] | None) -> list[ColumnElement[bool]]:
    conditions = [HubRecord.kind == kind.value]
    if gates is not None:
        conditions.append(HubRecord.gate_id.in_(gates))  # type: ignore[attr-defined]
    return conditions


def records(
    engine: Engine,
    kind: RecordKind,
    gates: Sequence[str] | None,
    before: datetime | None = None,
    limit: int = 100,
) -> list[HubRecord]:
    """One page of a kind of record, newest first on the gates' clocks."""
    query = select(HubRecord).where(*_where(kind, gates))
    if before is not None:
        query = query.where(HubRecord.at < before)
    query = query.order_by(HubRecord.at.desc(), HubRecord.record_id.desc()).limit(limit)  # type: ignore[attr-defined]
    with session(engine) as s:
        return list(s.scalars(query))


def all_records(
    engine: Engine, kind: RecordKind, gates: Sequence[str] | None, batch: int = 1000
) -> Iterator[list[HubRecord]]:
    """Every record of a kind, newest first, a batch at a time (the CSV export)."""
    before: datetime | None = None
    while True:
        page = records(engine, kind, gates, before, batch)
        if not page:
            return
        yield page
        if len(page) < batch:
            return
        before = page[-1].at  # records sharing that very instant are rare; see README


def open_alerts(engine: Engine, gates: Sequence[str] | None, limit: int = 200) -> list[HubRecord]:
    acknowledged = HubRecord.data["acknowledged_at"].as_string()
    query = (
        select(HubRecord)
        .where(*_where(RecordKind.ALERT, gates), acknowledged.is_(None))
        .order_by(HubRecord.at.desc())  # type: ignore[attr-defined]
        .limit(limit)
    )
    with session(engine) as s:
        return list(s.scalars(query))


def hub_audit(engine: Engine, limit: int = 100) -> list[AuditEvent]:
    with session(engine) as s:
        return list(
            s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))  # type: ignore[union-attr]
        )
