"""Commands through OpenAMI gateways: a command for a meter behind a gateway is sent to the gateway as a
COMMAND envelope and answered later; ``gateway_command`` keeps which gateway, the deadline, when it last
went out and when the result came (``openami.hes.gateway_commands``). ``command.state`` is not
constrained, so its new value ``at_gateway`` needs no change there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from openami.store.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("(CURRENT_TIMESTAMP)")


def upgrade() -> None:
    op.create_table(
        "gateway_command",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("command_id", _ID, nullable=False),
        sa.Column("comm_device_id", _ID, nullable=False),
        sa.Column("meter_serial", sa.String(length=64), nullable=False),
        sa.Column("deadline", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("sends", sa.Integer(), server_default="0", nullable=False),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.Column("expired_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["command.id"],
            name=op.f("fk_gateway_command_command_id_command"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["comm_device_id"],
            ["comm_device.id"],
            name=op.f("fk_gateway_command_comm_device_id_comm_device"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_gateway_command_tenant_id_tenant"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_command")),
        sa.UniqueConstraint("command_id", name="uq_gateway_command_command_id"),
    )
    op.create_index(op.f("ix_gateway_command_tenant_id"), "gateway_command", ["tenant_id"], unique=False)
    op.create_index(
        op.f("ix_gateway_command_comm_device_id"), "gateway_command", ["comm_device_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_gateway_command_comm_device_id"), table_name="gateway_command")
    op.drop_index(op.f("ix_gateway_command_tenant_id"), table_name="gateway_command")
    op.drop_table("gateway_command")
