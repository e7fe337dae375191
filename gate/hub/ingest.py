"""Taking in a gate's batch of records: checked whole, then written in one transaction.

A batch covers the gate's outbox positions (from_seq, to_seq]. It must start at or
before the position the hub has acknowledged (a later start would leave a gap), its
records come in strictly rising order inside that range, and each must be a valid
row of its kind belonging to the gate whose token sent it. Anything else is refused
whole, and nothing of it is written. A record replaces the hub's copy only when its
version (its outbox number) is higher, so replays and stragglers change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from gate.hub.models import HubGate, HubRecord, RecordKind
from gate.store.db import session
from gate.store.models import Alert, AuditEvent, Entry, StationLog, as_utc
from gate.store.records import UPSERTS

MAX_BATCH_RECORDS = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024
# The gate's table behind each kind, and the column that dates a record on the gate's clock.
RECORD_MODELS: dict[RecordKind, tuple[type[SQLModel], str]] = {
    RecordKind.ENTRY: (Entry, "seen_at"),
    RecordKind.ALERT: (Alert, "raised_at"),
    RecordKind.AUDIT: (AuditEvent, "at"),
    RecordKind.STATION: (StationLog, "at"),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SentRecord(Strict):
    seq: int = Field(ge=1, le=2**63 - 1)
    kind: RecordKind
    id: str = Field(min_length=1, max_length=64)
    data: dict[str, Any]


class GateStatus(Strict):
    """What a gate says of itself at each report; the overview shows it."""

    mode: str | None = Field(None, max_length=32)
    state: str | None = Field(None, max_length=32)
    occupancy: int | None = Field(None, ge=0, le=1_000_000)
    capacity: int | None = Field(None, ge=0, le=1_000_000)
    camera_healthy: bool | None = None
    station_link: str | None = Field(None, max_length=32)
    fluid_percent: int | None = Field(None, ge=0, le=100)
    backlog: int = Field(0, ge=0)
    lag_s: float = Field(0.0, ge=0)


class Batch(Strict):
    from_seq: int = Field(ge=0, le=2**63 - 1)
    to_seq: int = Field(ge=0, le=2**63 - 1)
    sent_at: datetime
    status: GateStatus = GateStatus()
    records: list[SentRecord] = Field(default_factory=list, max_length=MAX_BATCH_RECORDS)


class Refused(Exception):
    """A batch the hub will not take: HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Accepted:
    acked_seq: int
    written: int


def parse_batch(body: bytes) -> Batch:
    if len(body) > MAX_BATCH_BYTES:
        raise Refused(413, f"batch larger than {MAX_BATCH_BYTES} bytes")
    try:
        return Batch.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Refused(422, f"malformed batch: {where}: {first['msg']}") from None


def checked_rows(batch: Batch, gate_id: str, received_at: datetime) -> list[dict[str, Any]]:
    """The batch's records as hub rows, newest version of each; Refused if any is wrong."""
    if batch.to_seq < batch.from_seq:
        raise Refused(422, "out of order: to_seq is before from_seq")
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    previous = batch.from_seq
    for record in batch.records:
        if not previous < record.seq <= batch.to_seq:
            raise Refused(422, f"out of order: record seq {record.seq} after {previous}")
        previous = record.seq
        model, time_field = RECORD_MODELS[record.kind]
        try:
            row = model.model_validate(record.data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Refused(422, f"malformed {record.kind} {record.id}: {first['msg']}") from None
        if str(getattr(row, "id", None)) != record.id:
            raise Refused(422, f"malformed {record.kind} {record.id}: its data has another id")
        owner = getattr(row, "gate_id", None)
        if owner is not None and owner != gate_id:
            raise Refused(403, f"{record.kind} {record.id} belongs to gate {owner}, not {gate_id}")
        rows[(record.kind.value, record.id)] = {
            "gate_id": gate_id,
            "kind": record.kind.value,
            "record_id": record.id,
            "version": record.seq,
            "at": as_utc(getattr(row, time_field)),
            "received_at": received_at,
            "data": row.model_dump(mode="json"),
        }
    return list(rows.values())


def ingest(engine: Engine, gate_id: str, batch: Batch) -> Accepted:
    """Write one batch in one transaction and move the gate's acknowledged position."""
    now = datetime.now(UTC)
    rows = checked_rows(batch, gate_id, now)
    with session(engine) as s:
        # One batch of a gate at a time: the position check and its move cannot interleave.
        gate = s.scalars(select(HubGate).where(HubGate.id == gate_id).with_for_update()).one()
        if batch.from_seq > gate.acked_seq:
            raise Refused(409, f"out of order: the hub holds up to {gate.acked_seq}")
        if rows:
            upsert = UPSERTS[engine.dialect.name](HubRecord).values(rows)
            upsert = upsert.on_conflict_do_update(
                index_elements=["gate_id", "kind", "record_id"],
                set_={k: upsert.excluded[k] for k in ("version", "at", "received_at", "data")},
                where=HubRecord.version < upsert.excluded.version,
            )
            s.execute(upsert)
        gate.acked_seq = max(gate.acked_seq, batch.to_seq)
        gate.last_report_at = now
        gate.clock_offset_s = (as_utc(batch.sent_at) - now).total_seconds()
        gate.status = batch.status.model_dump()
        s.add(gate)
        s.commit()
        return Accepted(gate.acked_seq, len(rows))
