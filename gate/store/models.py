"""The tables the gate remembers: entries, alerts, audit trail, station events, users, gates.

Times are stored as timezone-aware UTC; the panel converts them for display.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; everything the store writes is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The start of a local day, in UTC: where the day's counts begin in the store."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _time(nullable: bool = True, index: bool = False) -> Column:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class Outcome(StrEnum):
    PENDING = "pending"  # decided to admit, visitor not through yet
    ADMITTED = "admitted"
    ADMITTED_REMINDED = "admitted_reminded"  # mask policy "remind": let in, but logged
    DENIED_NO_MASK = "denied_no_mask"
    DENIED_INCORRECT_MASK = "denied_incorrect_mask"
    DENIED_LOCKDOWN = "denied_lockdown"
    NOT_SANITIZED = "not_sanitized"  # never put hands under the dispenser in time
    LEFT_WAITING = "left_waiting"  # walked away while the building was full
    INTERRUPTED = "interrupted"  # the service stopped before the visit finished

    @property
    def admitted(self) -> bool:
        return self in (Outcome.ADMITTED, Outcome.ADMITTED_REMINDED)

    @property
    def denied(self) -> bool:
        return self.value.startswith("denied")


class Role(StrEnum):
    ADMIN = "admin"  # users and settings
    MANAGER = "manager"  # logs, statistics, export
    SECURITY = "security"  # live view, alerts, overrides


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Gate(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False))
    last_seen_at: datetime | None = Field(default=None, sa_column=_time())


class Entry(SQLModel, table=True):
    """One visitor's visit, however many frames they stood in view."""

    __table_args__ = (
        UniqueConstraint("gate_id", "unlock_ref", name="uq_entry_gate_ref"),
        Index("ix_entry_gate_seen", "gate_id", "seen_at"),
        Index("ix_entry_outcome_seen", "outcome", "seen_at"),
        # Gate and outcome together: with only the two above, a quiet gate filtered by
        # a common outcome walks that outcome's rows at every gate (seconds per page).
        Index("ix_entry_gate_outcome_seen", "gate_id", "outcome", "seen_at"),
    )

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    gate_id: str = Field(foreign_key="gate.id", max_length=64)
    # Number sent with the unlock command and echoed by the station, so every
    # physical unlock can be traced to exactly one entry. A u32 on the wire: past
    # PostgreSQL's 32-bit signed INTEGER for half of all values, hence BIGINT.
    unlock_ref: int = Field(ge=0, le=0xFFFFFFFF, sa_type=BigInteger)
    outcome: str = Field(max_length=32)
    mask_label: str | None = Field(default=None, max_length=32)
    mask_score: float | None = None
    # A visitor first denied who then fixes the mask keeps both steps here.
    first_label: str | None = Field(default=None, max_length=32)
    first_decided_at: datetime | None = Field(default=None, sa_column=_time())
    sanitized: bool = False
    door_opened: bool = False
    snapshot_path: str | None = Field(default=None, max_length=500)
    seen_at: datetime = Field(sa_column=_time(nullable=False, index=True))
    decided_at: datetime | None = Field(default=None, sa_column=_time())
    sanitized_at: datetime | None = Field(default=None, sa_column=_time())
    unlocked_at: datetime | None = Field(default=None, sa_column=_time())
    door_opened_at: datetime | None = Field(default=None, sa_column=_time())
    last_seen_at: datetime | None = Field(default=None, sa_column=_time())
    finished_at: datetime | None = Field(default=None, sa_column=_time())


class Alert(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    gate_id: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=40)
    severity: str = Field(max_length=16)
    message: str = Field(default="", max_length=500)
    entry_id: str | None = Field(default=None, max_length=36)
    raised_at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False, index=True))
    acknowledged_by: str | None = Field(default=None, max_length=64)
    acknowledged_at: datetime | None = Field(default=None, sa_column=_time())


class AuditEvent(SQLModel, table=True):
    """Who did what, why and when: logins, overrides, user changes."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False, index=True))
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64, index=True)
    reason: str = Field(default="", max_length=500)
    detail: str = Field(default="", max_length=2000)
    gate_id: str | None = Field(default=None, max_length=64)


class StationLog(SQLModel, table=True):
    """Station happenings worth counting later: doses, refills, exits, door and fire events."""

    __table_args__ = (Index("ix_stationlog_gate_kind_at", "gate_id", "kind", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    gate_id: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False))
    kind: str = Field(max_length=32)
    # The event's u32 value (a door held open for milliseconds, say): BIGINT, as unlock_ref.
    value: int | None = Field(default=None, sa_type=BigInteger)


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    role: str = Field(max_length=16)
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_time(nullable=False))
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=_time())


class RevokedSession(SQLModel, table=True):
    """A panel session ended by logout, kept until its cookie would have expired anyway,
    so that a restart does not bring it back."""

    sid: str = Field(primary_key=True, max_length=32)
    expires_at: datetime = Field(sa_column=_time(nullable=False, index=True))


class Outbox(SQLModel, table=True):
    """Every write to an entry, alert, audit or station-log row, in the order written:
    what the gate still has to send to the site hub.

    Filled by database triggers (migration 0005) in the same transaction as the row,
    so no write path can forget it; the replication task reads it, and drops what the
    hub has acknowledged. AUTOINCREMENT: SQLite must never hand out a number twice,
    even after the rows up to the newest were dropped.
    """

    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer(), "sqlite")
    )
    kind: str = Field(max_length=16)
    record_id: str = Field(max_length=64)
    gate_id: str | None = Field(default=None, max_length=64)
    at: float = Field(description="Unix time of the write, for the replication lag.")


class HubCursor(SQLModel, table=True):
    """Where this gate stands with the hub: `acked` (the outbox position the hub last
    acknowledged) and `orders` (the last hub order carried out)."""

    name: str = Field(primary_key=True, max_length=32)
    value: int = Field(default=0, sa_type=BigInteger)
