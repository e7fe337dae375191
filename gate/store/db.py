"""Opening the database: SQLite (WAL) by default, PostgreSQL when configured.

Schema changes go through Alembic only; `upgrade()` runs at every start so a
gate never runs against an older schema than its code.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlmodel import Session

from gate.config import check_data_dir
from gate.errors import GateError

T = TypeVar("T")
MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_SECONDS = 30  # how long a write waits for another process's
# How long a call waits out a database it cannot reach or write: a server restarting
# (a second or two), a full disk being freed. Longer, and the run ends, to be restarted.
OUTAGE_SECONDS = 10.0
OUTAGE_RETRY_SECONDS = 0.5


def make_engine(url: str) -> Engine:
    """Create an engine, creating the SQLite folder and turning WAL on."""
    try:
        parsed = make_url(url)
    except ArgumentError:  # not shown: a URL that cannot be taken apart may hold a password
        raise GateError(
            "database_url is not a valid database URL (such as postgresql://user@host/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        shown = parsed.render_as_string(hide_password=True)
        raise GateError(f"database_url {shown} is not supported: {exc}") from None


def ride_out(fn: Callable[..., T], *args: Any, seconds: float = OUTAGE_SECONDS) -> T:
    """``fn(*args)``, tried again while the database cannot be reached or written, for up
    to ``seconds``; then its OperationalError. Each try is a transaction of its own, so
    a try that failed left nothing behind (one whose commit was lost on the way may
    leave its row written twice: an alert or an audit line twice, rather than a gate
    that stops for every restart of its database server)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn(*args)
        except OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(OUTAGE_RETRY_SECONDS)


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        check_data_dir(Path(database).parent)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS}
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        _write_ahead_log(cursor)
        # FULL: a committed decision survives power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _write_ahead_log(cursor: sqlite3.Cursor) -> None:
    """Turn WAL on, waiting as any write would for a busy database.

    SQLite answers "database is locked" at once, without its busy wait, when another
    process switches a new file to WAL at the same moment: two commands starting
    together on a fresh data dir (a gate and `gate user add`).
    """
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration; one-line error if the server is unreachable
    or the file is no database (a config file given as database_url, say)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        command.upgrade(alembic_config(engine), "head")
    except DatabaseError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise GateError(f"cannot open database {engine.url!r}: {reason}") from None


def open_database(url: str) -> Engine:
    """Engine with the schema at head: the one way the gate opens its database."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
