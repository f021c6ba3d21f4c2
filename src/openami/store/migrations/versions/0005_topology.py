"""Topology over time: through which device (and mesh route) each meter was reached, and the history of
concentrators' parents (``openami.store.repositories.topology``).

Existing registrations are carried over as open rows starting at the migration: before it, nothing was
recorded, so the history claims nothing about that time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from openami.store.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_OPEN = sa.text("until IS NULL")
_PERIOD = "until IS NULL OR until >= since"


def upgrade() -> None:
    op.create_table(
        "meter_route",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("meter_id", _ID, nullable=False),
        sa.Column("comm_device_id", _ID, nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=True),
        sa.Column("hops", _JSON, nullable=True),
        sa.Column("quality", _JSON, server_default="{}", nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.CheckConstraint("source IN ('registration','gateway')", name=op.f("ck_meter_route_source_known")),
        sa.CheckConstraint(_PERIOD, name=op.f("ck_meter_route_period_ordered")),
        sa.ForeignKeyConstraint(
            ["comm_device_id"],
            ["comm_device.id"],
            name=op.f("fk_meter_route_comm_device_id_comm_device"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meter.id"], name=op.f("fk_meter_route_meter_id_meter"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_meter_route_tenant_id_tenant"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_route")),
    )
    with op.batch_alter_table("meter_route", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_meter_route_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index("ix_meter_route_meter_since", ["meter_id", "since"], unique=False)
        batch_op.create_index(
            "uq_meter_route_open", ["meter_id"], unique=True, sqlite_where=_OPEN, postgresql_where=_OPEN
        )
        batch_op.create_index(
            "ix_meter_route_device_open",
            ["tenant_id", "comm_device_id"],
            unique=False,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )

    op.create_table(
        "device_parent",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("comm_device_id", _ID, nullable=False),
        sa.Column("parent_id", _ID, nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=True),
        sa.CheckConstraint(_PERIOD, name=op.f("ck_device_parent_period_ordered")),
        sa.ForeignKeyConstraint(
            ["comm_device_id"],
            ["comm_device.id"],
            name=op.f("fk_device_parent_comm_device_id_comm_device"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["comm_device.id"],
            name=op.f("fk_device_parent_parent_id_comm_device"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_device_parent_tenant_id_tenant"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_parent")),
    )
    with op.batch_alter_table("device_parent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_parent_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index("ix_device_parent_device_since", ["comm_device_id", "since"], unique=False)
        batch_op.create_index(
            "uq_device_parent_open",
            ["comm_device_id"],
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )
        batch_op.create_index(
            "ix_device_parent_parent_open",
            ["tenant_id", "parent_id"],
            unique=False,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )

    _close_only(
        "meter_route", ("tenant_id", "meter_id", "comm_device_id", "since", "hops", "quality", "source")
    )
    _close_only("device_parent", ("tenant_id", "comm_device_id", "parent_id", "since"))

    # What is registered now, as open rows from now on (hops NULL: no route reported yet).
    op.execute(
        "INSERT INTO meter_route (tenant_id, meter_id, comm_device_id, since, source) "
        "SELECT tenant_id, id, comm_device_id, CURRENT_TIMESTAMP, 'registration' FROM meter "
        "WHERE comm_device_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO device_parent (tenant_id, comm_device_id, parent_id, since) "
        "SELECT tenant_id, id, parent_id, CURRENT_TIMESTAMP FROM comm_device WHERE parent_id IS NOT NULL"
    )


def _close_only(table: str, fixed: tuple[str, ...]) -> None:
    """History is never edited: the only UPDATE the database lets through closes an open row (sets
    ``until``, at or after ``since``) and changes nothing else."""
    message = f"{table} is history: only an open row may be closed"
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(f"NEW.{column} IS DISTINCT FROM OLD.{column}" for column in ("id", *fixed))
        op.execute(
            f"CREATE FUNCTION {table}_close_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF OLD.until IS NOT NULL OR NEW.until IS NULL OR {changed} THEN "
            f"RAISE EXCEPTION '{message}'; END IF; RETURN NEW; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_close_only BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_close_only()"
        )
    else:
        changed = " OR ".join(f"NEW.{column} IS NOT OLD.{column}" for column in ("id", *fixed))
        op.execute(
            f"CREATE TRIGGER {table}_close_only BEFORE UPDATE ON {table} "
            f"WHEN OLD.until IS NOT NULL OR NEW.until IS NULL OR {changed} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )


def _drop_close_only(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_close_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_close_only()")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_close_only")


def downgrade() -> None:
    for table in ("device_parent", "meter_route"):
        _drop_close_only(table)
    with op.batch_alter_table("device_parent", schema=None) as batch_op:
        batch_op.drop_index("ix_device_parent_parent_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.drop_index("uq_device_parent_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.drop_index("ix_device_parent_device_since")
        batch_op.drop_index(batch_op.f("ix_device_parent_tenant_id"))
    op.drop_table("device_parent")
    with op.batch_alter_table("meter_route", schema=None) as batch_op:
        batch_op.drop_index("ix_meter_route_device_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.drop_index("uq_meter_route_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.drop_index("ix_meter_route_meter_since")
        batch_op.drop_index(batch_op.f("ix_meter_route_tenant_id"))
    op.drop_table("meter_route")
