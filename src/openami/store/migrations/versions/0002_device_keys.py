"""Device keys: per-meter DLMS secrets, encrypted at rest (openami.security.keyvault).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from openami.store.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_key",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("meter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("system_title", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.CheckConstraint("kind IN ('ek','ak','lls','hls')", name=op.f("ck_device_key_kind_known")),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meter.id"], name=op.f("fk_device_key_meter_id_meter"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_device_key_tenant_id_tenant"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_key")),
        sa.UniqueConstraint("system_title", "kind", name="uq_device_key_system_title_kind"),
    )
    with op.batch_alter_table("device_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_key_meter_id"), ["meter_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_key_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("device_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_key_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_device_key_meter_id"))

    op.drop_table("device_key")
