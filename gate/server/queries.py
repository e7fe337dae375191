"""Every database read and write the panel makes, in one place.

Entry lists page by keyset (``seen_at``, ``id``) instead of OFFSET, so page 1
and page 20,000 cost the same and the CSV export can walk a million rows in
short, independent batches: no transaction or cursor stays open while a slow
client downloads, and SQLite writers are never blocked by an export.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, and_, case, func, or_, select, update

from gate.store.db import session
from gate.store.models import Alert, AuditEvent, Entry, Gate, Outcome, Severity, StationLog, as_utc
from gate.store.records import audit_detail

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_entry_id(value: str) -> bool:
    return bool(_UUID_RE.fullmatch(value))


@dataclass(frozen=True)
class Cursor:
    """A position in the entry list: the (seen_at, id) of the row at a page edge."""

    seen_at: datetime
    id: str

    def encode(self) -> str:
        micros = (as_utc(self.seen_at) - EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor from a URL; ValueError on anything that is not one we made."""
        micros, _, entry_id = text.partition(".")
        if not micros.isdigit() or len(micros) > 17 or not is_entry_id(entry_id):
            raise ValueError("not a page cursor")
        return cls(EPOCH + timedelta(microseconds=int(micros)), entry_id)


@dataclass(frozen=True)
class EntryFilter:
    start: datetime | None = None  # UTC, inclusive
    end: datetime | None = None  # UTC, exclusive
    outcome: Outcome | None = None
    gate_id: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.start is not None:
            clauses.append(Entry.seen_at >= self.start)  # type: ignore[arg-type]
        if self.end is not None:
            clauses.append(Entry.seen_at < self.end)  # type: ignore[arg-type]
        if self.outcome is not None:
            clauses.append(Entry.outcome == self.outcome.value)  # type: ignore[arg-type]
        if self.gate_id is not None:
            clauses.append(Entry.gate_id == self.gate_id)  # type: ignore[arg-type]
        return clauses


@dataclass(frozen=True)
class EntryPage:
    rows: list[Row[Any]]
    newer: Cursor | None  # cursor for the page before (more recent rows), if any
    older: Cursor | None  # cursor for the page after (older rows), if any


LIST_COLUMNS = (
    Entry.id,
    Entry.gate_id,
    Entry.seen_at,
    Entry.outcome,
    Entry.mask_label,
    Entry.mask_score,
    Entry.sanitized,
    Entry.door_opened,
    Entry.snapshot_path,
)
EXPORT_COLUMNS = (
    Entry.id,
    Entry.gate_id,
    Entry.seen_at,
    Entry.outcome,
    Entry.mask_label,
    Entry.mask_score,
    Entry.first_label,
    Entry.first_decided_at,
    Entry.sanitized,
    Entry.door_opened,
    Entry.decided_at,
    Entry.sanitized_at,
    Entry.unlocked_at,
    Entry.door_opened_at,
    Entry.finished_at,
)


def _beyond(cursor: Cursor, older: bool) -> ColumnElement[bool]:
    """Rows past ``cursor`` in (seen_at, id) order, towards older or newer ones.

    "seen_at <= t AND (...)" rather than a bare OR keeps a range the index can seek to.
    """
    seen, entry_id = Entry.seen_at, Entry.id
    if older:
        return and_(seen <= cursor.seen_at, or_(seen < cursor.seen_at, entry_id < cursor.id))  # type: ignore[operator]
    return and_(seen >= cursor.seen_at, or_(seen > cursor.seen_at, entry_id > cursor.id))  # type: ignore[operator]


def list_entries(
    engine: Engine,
    flt: EntryFilter,
    limit: int = 50,
    before: Cursor | None = None,
    after: Cursor | None = None,
) -> EntryPage:
    """One page, newest first. ``before`` walks to older rows, ``after`` back to newer ones."""
    query = select(*LIST_COLUMNS).where(*flt.clauses())
    if after is not None:
        query = query.where(_beyond(after, older=False)).order_by(
            Entry.seen_at.asc(), Entry.id.asc()
        )  # type: ignore[union-attr,attr-defined]
    else:
        if before is not None:
            query = query.where(_beyond(before, older=True))
        query = query.order_by(Entry.seen_at.desc(), Entry.id.desc())  # type: ignore[union-attr,attr-defined]
    with engine.connect() as connection:
        rows = list(connection.execute(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if after is not None:
        rows.reverse()
        newer = _cursor(rows[0]) if more and rows else None
        older = _cursor(rows[-1]) if rows else None
    else:
        newer = _cursor(rows[0]) if before is not None and rows else None
        older = _cursor(rows[-1]) if more else None
    return EntryPage(rows, newer, older)


def _cursor(row: Row[Any]) -> Cursor:
    return Cursor(row.seen_at, row.id)


def iter_entry_batches(
    engine: Engine, flt: EntryFilter, batch: int = 5000
) -> Iterator[Sequence[Row[Any]]]:
    """All matching entries, newest first, in batches of short independent queries."""
    cursor: Cursor | None = None
    while True:
        query = select(*EXPORT_COLUMNS).where(*flt.clauses())
        if cursor is not None:
            query = query.where(_beyond(cursor, older=True))
        query = query.order_by(Entry.seen_at.desc(), Entry.id.desc()).limit(batch)  # type: ignore[union-attr,attr-defined]
        with engine.connect() as connection:
            rows = connection.execute(query).all()
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        cursor = _cursor(rows[-1])


def get_entry(engine: Engine, entry_id: str) -> Entry | None:
    if not is_entry_id(entry_id):
        return None
    with session(engine) as db:
        return db.get(Entry, entry_id)


def gate_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(select(Gate.id).order_by(Gate.id)))


# -- alerts and audit -------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAlerts:
    """The open alerts a page lists, and how many more are open beyond them."""

    shown: list[Alert]
    more: int


def _open_on(gate_id: str) -> ColumnElement[bool]:
    return and_(Alert.gate_id == gate_id, Alert.acknowledged_at.is_(None))  # type: ignore[arg-type,union-attr]


def open_alerts(engine: Engine, gate_id: str, limit: int = 100) -> OpenAlerts:
    """This gate's open alerts, critical ones first, then newest first.

    Every refused visitor raises a warning, so newest-first alone would let a busy
    morning push a fire or a forced door off the guard's list.
    """
    critical_first = case((Alert.severity == Severity.CRITICAL.value, 0), else_=1)
    query = (
        select(Alert)
        .where(_open_on(gate_id))
        .order_by(critical_first, Alert.raised_at.desc(), Alert.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    with session(engine) as db:
        shown = list(db.scalars(query))
        total = db.scalar(select(func.count()).select_from(Alert).where(_open_on(gate_id))) or 0
    return OpenAlerts(shown, total - len(shown))


def acknowledge_alert(engine: Engine, alert_id: int, gate_id: str, actor: str) -> Alert | None:
    """Mark one of this gate's alerts seen, with an audit row.

    None if unknown, another gate's or already acknowledged.
    """
    now = datetime.now(UTC)
    with session(engine) as db:
        # One UPDATE with the "not yet" condition: two guards clicking together ack once.
        result = db.execute(
            update(Alert)
            .where(Alert.id == alert_id, _open_on(gate_id))  # type: ignore[arg-type]
            .values(acknowledged_by=actor, acknowledged_at=now)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            db.rollback()
            return None
        alert = db.get(Alert, alert_id)
        assert alert is not None
        db.add(
            AuditEvent(
                actor=actor,
                action="alert_ack",
                gate_id=alert.gate_id,
                # 300 characters stay under the column's 2000 even if JSON escapes each one.
                detail=audit_detail(alert=alert_id, kind=alert.kind, message=alert.message[:300]),
            )
        )
        db.commit()
        return alert


def list_audit(
    engine: Engine, before_id: int | None = None, action: str | None = None, limit: int = 100
) -> list[AuditEvent]:
    with session(engine) as db:
        query = select(AuditEvent)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)  # type: ignore[operator]
        if action:
            query = query.where(AuditEvent.action == action)
        return list(db.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))  # type: ignore[union-attr]


def audit_actions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action))
        )


# -- statistics ---------------------------------------------------------------------------


def _utc_hour(engine: Engine, column: Any) -> ColumnElement[str]:
    """'YYYY-MM-DD HH' of a UTC timestamp; the caller re-buckets into the local zone."""
    if engine.dialect.name == "postgresql":
        return func.to_char(
            func.date_trunc("hour", func.timezone("UTC", column)), "YYYY-MM-DD HH24"
        )
    return func.strftime("%Y-%m-%d %H", column)


def _parse_hour(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=UTC)


def hourly_outcomes(
    engine: Engine, start: datetime, end: datetime, gate_id: str | None
) -> list[tuple[datetime, str, int]]:
    """(UTC hour, outcome, count) for entries seen in [start, end)."""
    hour = _utc_hour(engine, Entry.seen_at).label("hour")
    query = (
        select(hour, Entry.outcome, func.count())
        .where(*EntryFilter(start, end, None, gate_id).clauses())
        .group_by(hour, Entry.outcome)
    )
    with engine.connect() as connection:
        return [(_parse_hour(h), o, n) for h, o, n in connection.execute(query)]


def hourly_station(
    engine: Engine, start: datetime, end: datetime, gate_id: str | None, kinds: Sequence[str]
) -> list[tuple[datetime, str, int]]:
    """(UTC hour, kind, count) of station log rows such as 'dispensed' and 'refill'."""
    hour = _utc_hour(engine, StationLog.at).label("hour")
    query = select(hour, StationLog.kind, func.count()).where(
        StationLog.at >= start,
        StationLog.at < end,  # type: ignore[arg-type,operator]
        StationLog.kind.in_(kinds),  # type: ignore[attr-defined]
    )
    if gate_id is not None:
        query = query.where(StationLog.gate_id == gate_id)
    with engine.connect() as connection:
        rows = connection.execute(query.group_by(hour, StationLog.kind))
        return [(_parse_hour(h), k, n) for h, k, n in rows]


def mask_labels(
    engine: Engine, start: datetime, end: datetime, gate_id: str | None
) -> dict[str | None, int]:
    """How many visits ended with each mask label (None: no face decision was made)."""
    query = (
        select(Entry.mask_label, func.count())
        .where(*EntryFilter(start, end, None, gate_id).clauses())
        .group_by(Entry.mask_label)
    )
    with engine.connect() as connection:
        return {label: count for label, count in connection.execute(query)}


def occupancy_moves(
    engine: Engine, start: datetime, end: datetime, gate_id: str | None
) -> list[tuple[datetime, int]]:
    """(time, +1 for an admitted visitor / -1 for an exit), sorted by time."""
    admitted = (Outcome.ADMITTED.value, Outcome.ADMITTED_REMINDED.value)
    when = func.coalesce(Entry.door_opened_at, Entry.unlocked_at, Entry.decided_at, Entry.seen_at)
    entries = select(when).where(
        *EntryFilter(start, end, None, gate_id).clauses(), Entry.outcome.in_(admitted)
    )  # type: ignore[attr-defined]
    exits = select(StationLog.at).where(
        StationLog.at >= start,
        StationLog.at < end,  # type: ignore[arg-type,operator]
        StationLog.kind == "exit",
    )
    if gate_id is not None:
        exits = exits.where(StationLog.gate_id == gate_id)
    with engine.connect() as connection:
        moves = [(as_utc(_as_datetime(t)), 1) for t in connection.scalars(entries)]
        moves += [(as_utc(t), -1) for t in connection.scalars(exits)]
    return sorted(moves)


def _as_datetime(value: datetime | str) -> datetime:
    # COALESCE loses the column type on SQLite, which then hands back the stored text.
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
