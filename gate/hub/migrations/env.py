"""Alembic environment of the hub's database: the engine is handed in by gate.hub.db.

One transaction for the whole upgrade, under an advisory lock on PostgreSQL so two
hub processes starting together do not both create the tables. The version table
has a name of its own, so the hub's history never mixes with a gate's.
"""

from alembic import context
from sqlalchemy import text

from gate.hub.models import HUB_METADATA

MIGRATION_LOCK = int.from_bytes(b"hubmigr", "big")
VERSION_TABLE = "hub_alembic_version"

engine = context.config.attributes["engine"]
with engine.connect() as connection, connection.begin():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=HUB_METADATA,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
