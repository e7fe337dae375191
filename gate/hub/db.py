"""Opening the hub's database: PostgreSQL in service, SQLite only for the demo."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import DatabaseError

from gate.config import Settings
from gate.errors import GateError
from gate.store.db import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def hub_database_url(settings: Settings) -> str:
    if not settings.hub.database_url:
        raise GateError("hub.database_url is not set: the hub needs its own database")
    return settings.hub.database_url


def open_hub_database(url: str) -> Engine:
    """Engine with the hub's schema at head; one line if it cannot be reached."""
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        command.upgrade(config, "head")
    except DatabaseError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise GateError(f"cannot open the hub's database {engine.url!r}: {reason}") from None
    return engine
