"""outbox for the site hub

Every insert or update of an entry, alert, audit or station-log row adds an outbox
row in the same transaction, by trigger: the runtime, the panel and the commands
keep writing as they did, and none of them can forget to. The rows already stored
go into the outbox first, oldest first, so a gate joining a hub sends its history.

On PostgreSQL the trigger also takes a transaction-level advisory lock, so outbox
numbers are committed in the order they were drawn: without it a reader could see
seq 6 committed before seq 5 and acknowledge past a row it never sent.

A later batch migration that recreates one of these tables on SQLite drops its
triggers with it; such a migration must create them again (`create_triggers`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 22:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# kind sent to the hub, table, the column the gate's id is in, and the column ordering history
WATCHED = (
    ("entry", "entry", "gate_id", "seen_at"),
    ("alert", "alert", "gate_id", "raised_at"),
    ("audit", "auditevent", "gate_id", "at"),
    ("station", "stationlog", "gate_id", "at"),
)
OUTBOX_LOCK = int.from_bytes(b"gateobox", "big")
NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "extract(epoch from clock_timestamp())",
}


def create_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION gate_outbox() RETURNS trigger AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock({OUTBOX_LOCK});
                INSERT INTO outbox (kind, record_id, gate_id, at)
                VALUES (TG_ARGV[0], NEW.id::text, NEW.gate_id, {NOW[dialect]});
                RETURN NULL;
            END $$ LANGUAGE plpgsql
            """
        )
    for kind, table, _gate, _order in WATCHED:
        if dialect == "postgresql":
            op.execute(
                f"CREATE TRIGGER outbox_{table} AFTER INSERT OR UPDATE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION gate_outbox('{kind}')"
            )
            continue
        for event in ("insert", "update"):
            op.execute(
                f"CREATE TRIGGER outbox_{table}_{event} AFTER {event.upper()} ON {table} "
                f"BEGIN INSERT INTO outbox (kind, record_id, gate_id, at) "
                f"VALUES ('{kind}', NEW.id, NEW.gate_id, {NOW[dialect]}); END"
            )


def drop_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for _kind, table, _gate, _order in WATCHED:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS outbox_{table} ON {table}")
        else:
            for event in ("insert", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS outbox_{table}_{event}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS gate_outbox()")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("record_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("gate_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "hubcursor",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    now = NOW[op.get_bind().dialect.name]
    for kind, table, gate, order in WATCHED:
        op.execute(
            f"INSERT INTO outbox (kind, record_id, gate_id, at) "
            f"SELECT '{kind}', CAST(id AS VARCHAR(64)), {gate}, {now} FROM {table} "
            f"ORDER BY {order}, id"
        )
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    op.drop_table("hubcursor")
    op.drop_table("outbox")
