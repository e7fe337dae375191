"""Alembic environment: the engine is handed in by gate.store.db, never read from a file.

The whole upgrade is one transaction, so a migration cut short (a full disk, a
kill) leaves the database as it was, and the next start runs it again. That
holds on PostgreSQL as it stands. On SQLite, pysqlite by default sends BEGIN
only before INSERT, UPDATE or DELETE, so each CREATE TABLE commits on its own
and a failure halfway leaves tables without their alembic_version row: a
database no later start can migrate ("table alert already exists"). For the
migration's connection, pysqlite's own transaction handling is therefore off
and the BEGIN is ours, as SQLAlchemy documents for transactional DDL on pysqlite.

Every gate upgrades at start, and gates may start together on one database. On
PostgreSQL both created the tables and the second failed ("duplicate key value
violates unique constraint pg_type_typname_nsp_index"), so the upgrade's
transaction first takes an advisory lock: the second gate waits for the first to
commit, then reads the version it left and has nothing to do. On SQLite our BEGIN
is IMMEDIATE for the same reason: a plain BEGIN read the empty schema first and
failed with "database is locked" when it came to write; IMMEDIATE takes the write
lock at once, and the second waits (the engine's 30 s busy timeout).
"""

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from alembic import context
from sqlalchemy import Connection, event, text
from sqlmodel import SQLModel

import gate.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)

# Any bigint no other code takes an advisory lock on: "gatemigr" in ASCII.
MIGRATION_LOCK = int.from_bytes(b"gatemigr", "big")


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def transactional_ddl(connection: Connection) -> Iterator[None]:
    """While held, every statement on this SQLite connection (DDL too) is in our BEGIN."""
    driver = connection.connection.driver_connection
    before = driver.isolation_level
    driver.isolation_level = None  # pysqlite neither begins nor commits on its own
    event.listen(connection, "begin", _begin)
    try:
        yield
    finally:
        event.remove(connection, "begin", _begin)
        driver.isolation_level = before  # the pooled connection goes back as it came


engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    with transactional_ddl(connection) if sqlite else nullcontext(), connection.begin():
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends, so across the whole upgrade.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=sqlite,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
