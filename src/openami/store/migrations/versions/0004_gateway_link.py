"""Gateway link: per-gateway link keys, replay windows and health (openami.hes.gateway_link), and the
meters gateways discovered, pending approval.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from openami.store.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("(CURRENT_TIMESTAMP)")


def upgrade() -> None:
    op.create_table(
        "gateway_link",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("comm_device_id", _ID, nullable=False),
        sa.Column("key_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("key_created_at", UTCDateTime(), nullable=False),
        sa.Column("up_highest", sa.BigInteger(), server_default="-1", nullable=False),
        sa.Column("up_mask", sa.LargeBinary(), nullable=False),
        sa.Column("next_down_seq", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("config_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column(
            "health",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("health_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["comm_device_id"],
            ["comm_device.id"],
            name=op.f("fk_gateway_link_comm_device_id_comm_device"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_gateway_link_tenant_id_tenant"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_link")),
        sa.UniqueConstraint("comm_device_id", name="uq_gateway_link_comm_device_id"),
    )
    with op.batch_alter_table("gateway_link", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_link_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "pending_device",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("comm_device_id", _ID, nullable=False),
        sa.Column("protocol", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=255), server_default="", nullable=False),
        sa.Column("ident", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=120), server_default="", nullable=False),
        sa.Column("medium", sa.String(length=16), nullable=True),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=160), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending','approved','rejected')", name=op.f("ck_pending_device_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["comm_device_id"],
            ["comm_device.id"],
            name=op.f("fk_pending_device_comm_device_id_comm_device"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_pending_device_tenant_id_tenant"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_device")),
        sa.UniqueConstraint("comm_device_id", "protocol", "ident", name="uq_pending_device_gateway_device"),
    )
    with op.batch_alter_table("pending_device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pending_device_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index("ix_pending_device_tenant_status", ["tenant_id", "status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pending_device", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_device_tenant_status")
        batch_op.drop_index(batch_op.f("ix_pending_device_tenant_id"))
    op.drop_table("pending_device")
    with op.batch_alter_table("gateway_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_link_tenant_id"))
    op.drop_table("gateway_link")
