"""Shared pieces of the hub tests: a throwaway PostgreSQL database for the session, a
fresh schema per test, the hub served over real HTTP, and a gate store to replicate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from gate.config import Settings, load_settings
from gate.hub.app import create_hub_app
from gate.hub.db import open_hub_database
from gate.store.db import make_engine, session, upgrade
from gate.store.models import Alert, AuditEvent, Entry, StationLog
from gate.store.records import ensure_gate, log_station, raise_alert, record_audit, save_entry
from tests.panel_support import LiveServer

KINDS = {"entry": Entry, "alert": Alert, "audit": AuditEvent, "station": StationLog}


def throwaway_database(server_url: str) -> Iterator[str]:
    """A database of its own for one test session, dropped at its end."""
    name = f"hub_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fresh_schema(database_url: str) -> Iterator[tuple[Engine, str]]:
    """A migrated hub in a new schema; yields its engine and a URL that reaches it."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = (
        make_url(database_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    engine = open_hub_database(url)
    try:
        yield engine, url
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def hub_settings(tmp_path: Path, hub_url: str, **values: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "hub", hub={"database_url": hub_url, **values})


def hub_server(settings: Settings, engine: Engine) -> LiveServer:
    """The hub app under the gate's uvicorn set-up, on a free port, in a thread."""
    return LiveServer(create_hub_app(settings, engine), settings.server)


def running_hub(database_url: str, tmp_path: Path) -> Iterator[tuple[Engine, LiveServer]]:
    """A hub served on a fresh schema of `database_url`, for a test's fixture to yield."""
    for engine, url in fresh_schema(database_url):
        with hub_server(hub_settings(tmp_path, url), engine) as server:
            yield engine, server


def gate_store(path: Path | str, gate_id: str) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    ensure_gate(engine, gate_id)
    return engine


def write_visits(engine: Engine, gate_id: str, count: int, at: datetime | None = None) -> None:
    """Visits as the runtime writes them (a pending entry, then its update), with an
    alert for each denial, a dose in the station log and an audit row now and then."""
    at = at or datetime.now(UTC)
    for n in range(count):
        entry = Entry(
            gate_id=gate_id, unlock_ref=uuid.uuid4().int % 2**32, outcome="pending", seen_at=at
        )
        save_entry(engine, entry)
        denied = n % 4 == 0
        entry.outcome = "denied_no_mask" if denied else "admitted"
        entry.finished_at = at
        save_entry(engine, entry)
        if denied:
            raise_alert(engine, gate_id, "no_mask", "warning", "ask_mask", entry.id)
        else:
            log_station(engine, gate_id, "dispensed", 600)
        if n % 10 == 0:
            record_audit(engine, "guard", "override_unlock", "delivery", "", gate_id)


def gate_rows(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    """Every record of a gate's store, as the hub keeps them: (kind, id) → JSON fields."""
    rows = {}
    with session(engine) as s:
        for kind, model in KINDS.items():
            for row in s.scalars(select(model)):
                rows[(kind, str(row.id))] = row.model_dump(mode="json")
    return rows


def hub_rows(engine: Engine, gate_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    from gate.hub.models import HubRecord

    with session(engine) as s:
        return {
            (r.kind, r.record_id): r.data
            for r in s.scalars(select(HubRecord).where(HubRecord.gate_id == gate_id))
        }
