"""The hub's own tables, on a metadata of their own (the gate's migrations never see them).

The hub's database also holds the panel's accounts, their audit and revoked
sessions, in the gate's own `user`, `auditevent` and `revokedsession` tables, so the
gate's account and login code serves the hub unchanged.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gate.store.models import AuditEvent, RevokedSession, User, _time, utcnow

HUB_METADATA = MetaData()
# The gate's tables the hub's database holds too: accounts, their audit, logouts.
SHARED_TABLES = (User, AuditEvent, RevokedSession)
for _model in SHARED_TABLES:
    _model.__table__.to_metadata(HUB_METADATA)  # type: ignore[attr-defined]
JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")


class HubModel(SQLModel, registry=registry(metadata=HUB_METADATA)):
    """Base of the hub's tables."""


class RecordKind(StrEnum):
    ENTRY = "entry"
    ALERT = "alert"
    AUDIT = "audit"
    STATION = "station"


class HubGate(HubModel, table=True):
    """A door registered with the hub, with the hash of its token and its last report."""

    __tablename__ = "hub_gate"

    id: str = Field(primary_key=True, max_length=64)
    centre: str = Field(default="", max_length=200, index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False))
    # The gate's outbox position the hub holds everything up to.
    acked_seq: int = Field(default=0, sa_type=BigInteger)
    last_report_at: datetime | None = Field(default=None, sa_column=_time())
    # The gate's clock minus the hub's at the last report, in seconds.
    clock_offset_s: float | None = None
    status: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DOCUMENT)


class HubRecord(HubModel, table=True):
    """The newest version the hub holds of one record a gate wrote.

    `version` is the gate's outbox number of the write: a higher one replaces the
    row, a lower or equal one changes nothing, so a replay or a late batch is harmless.
    `at` is the record's own time on the gate's clock; `received_at` the hub's.
    """

    __tablename__ = "hub_record"
    __table_args__ = (
        Index("ix_hub_record_kind_at", "kind", "at"),
        Index("ix_hub_record_gate_kind_at", "gate_id", "kind", "at"),
    )

    gate_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=16)
    record_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(sa_type=BigInteger)
    at: datetime = Field(sa_column=_time(nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False))
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DOCUMENT)


class OrderAction(StrEnum):
    LOCKDOWN_ON = "lockdown_on"
    LOCKDOWN_OFF = "lockdown_off"
    EMERGENCY_ON = "emergency_on"
    EMERGENCY_OFF = "emergency_off"
    ACK_ALERT = "alert_ack"  # `subject` names the gate's alert id


class HubOrder(HubModel, table=True):
    """One order for one gate, from a hub user; a site-wide order is one row per gate."""

    __tablename__ = "hub_order"
    __table_args__ = (Index("ix_hub_order_gate_id_id", "gate_id", "id"),)

    # INTEGER on SQLite, the only type it numbers by itself (the demo's hub).
    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer(), "sqlite")
    )
    gate_id: str = Field(max_length=64)
    action: str = Field(max_length=32)
    subject: str = Field(default="", max_length=64)
    actor: str = Field(max_length=64)
    reason: str = Field(default="", max_length=500)
    issued_at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False))
    fetched_at: datetime | None = Field(default=None, sa_column=_time())
    acked_at: datetime | None = Field(default=None, sa_column=_time())
    result: str = Field(default="", max_length=32)
