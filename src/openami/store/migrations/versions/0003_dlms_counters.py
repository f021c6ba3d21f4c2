"""DLMS invocation counters: the head-end's next counter towards each meter (openami.hes.dlms_counters).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from openami.store.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dlms_counter",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("meter_id", _ID, nullable=False),
        sa.Column("client_title", sa.String(length=16), nullable=False),
        sa.Column("next_value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meter.id"], name=op.f("fk_dlms_counter_meter_id_meter"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_dlms_counter_tenant_id_tenant"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlms_counter")),
        sa.UniqueConstraint("meter_id", "client_title", name="uq_dlms_counter_meter_title"),
    )
    with op.batch_alter_table("dlms_counter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dlms_counter_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dlms_counter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dlms_counter_tenant_id"))
    op.drop_table("dlms_counter")
