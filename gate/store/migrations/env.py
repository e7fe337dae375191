"""Alembic environment: the engine is handed in by gate.store.db, never read from a file.

The whole upgrade is one transaction, so a migration cut short (a full disk, a
kill) leaves the database as it was, and the next start runs it again. That
holds on PostgreSQL as it stands. On SQLite, pysqlite by default sends BEGIN
only before INSERT, UPDATE or DELETE, so each CREATE TABLE commits on its own
and a failure halfway leaves tables without their alembic_version row: a
database no later start can migrate ("table alert already exists"). For the
migration's connection, pysqlite's own transaction handling is therefore off
and the BEGIN is ours, as SQLAlchemy documents for transactional DDL on pysqlite.
"""

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from alembic import context
from sqlalchemy import Connection, event
from sqlmodel import SQLModel

import gate.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)


def _begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


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
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=sqlite,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
