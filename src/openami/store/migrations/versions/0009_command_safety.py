"""Command safety (issue 6): protections that forbid a meter's remote disconnect, the tenant's
no-disconnect calendar, bulk command requests awaiting a second user's approval, and firmware campaigns
with their meters by wave. New tables only; nothing existing changes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from openami.store.types import UTCDateTime, json_type

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("(CURRENT_TIMESTAMP)")


def upgrade() -> None:
    op.create_table(
        "no_disconnect_period",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=True),
        sa.Column("ends_at", UTCDateTime(), nullable=True),
        sa.Column("from_minute", sa.Integer(), nullable=True),
        sa.Column("to_minute", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=160), nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=_NOW, nullable=False),
        sa.CheckConstraint(
            "(kind = 'once' AND starts_at IS NOT NULL AND ends_at > starts_at)"
            " OR (kind = 'weekly' AND from_minute BETWEEN 0 AND 10079 AND to_minute BETWEEN 0 AND 10080"
            " AND from_minute <> to_minute)",
            name=op.f("ck_no_disconnect_period_shape"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_no_disconnect_period_tenant_id_tenant"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_no_disconnect_period")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_no_disconnect_period_tenant_name"),
    )
    op.create_index(
        op.f("ix_no_disconnect_period_tenant_id"), "no_disconnect_period", ["tenant_id"], unique=False
    )
    op.create_table(
        "command_request",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("params", json_type(), server_default="{}", nullable=False),
        sa.Column("meter_ids", json_type(), nullable=False),
        sa.Column("meter_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="requested", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("requested_by", _ID, nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("decided_by", _ID, nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("force_calendar", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("refused", json_type(), server_default="[]", nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('requested','approved','rejected','running','done')",
            name=op.f("ck_command_request_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"],
            ["app_user.id"],
            name=op.f("fk_command_request_decided_by_app_user"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["app_user.id"],
            name=op.f("fk_command_request_requested_by_app_user"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_command_request_tenant_id_tenant"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_request")),
    )
    op.create_index(op.f("ix_command_request_tenant_id"), "command_request", ["tenant_id"], unique=False)
    op.create_index(
        "ix_command_request_tenant_state", "command_request", ["tenant_id", "state"], unique=False
    )
    op.create_table(
        "firmware_campaign",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("identifier", sa.String(length=64), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("image_size", sa.Integer(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("waves", json_type(), nullable=False),
        sa.Column("failure_threshold", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=24), server_default="draft", nullable=False),
        sa.Column("current_wave", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("meter_count", sa.Integer(), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("created_by", _ID, nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=_NOW, nullable=False),
        sa.Column("approved_by", _ID, nullable=True),
        sa.Column("approved_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('draft','approved','running','paused','aborted','stopped_on_failures','done')",
            name=op.f("ck_firmware_campaign_state_known"),
        ),
        sa.CheckConstraint(
            "failure_threshold >= 0 AND failure_threshold <= 1",
            name=op.f("ck_firmware_campaign_threshold_fraction"),
        ),
        sa.ForeignKeyConstraint(
            ["approved_by"],
            ["app_user.id"],
            name=op.f("fk_firmware_campaign_approved_by_app_user"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["app_user.id"],
            name=op.f("fk_firmware_campaign_created_by_app_user"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_firmware_campaign_tenant_id_tenant"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware_campaign")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_firmware_campaign_tenant_name"),
    )
    op.create_index(op.f("ix_firmware_campaign_tenant_id"), "firmware_campaign", ["tenant_id"], unique=False)
    op.create_table(
        "meter_protection",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("meter_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.String(length=160), nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=_NOW, nullable=False),
        sa.CheckConstraint(
            "kind IN ('medical','life_support','vulnerable')", name=op.f("ck_meter_protection_kind_known")
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meter.id"], name=op.f("fk_meter_protection_meter_id_meter"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_meter_protection_tenant_id_tenant"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_protection")),
        sa.UniqueConstraint("meter_id", "kind", name="uq_meter_protection_meter_kind"),
    )
    op.create_index(op.f("ix_meter_protection_tenant_id"), "meter_protection", ["tenant_id"], unique=False)
    op.create_table(
        "campaign_meter",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("meter_id", _ID, nullable=False),
        sa.Column("wave", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("command_id", _ID, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending','queued','succeeded','failed','cancelled')",
            name=op.f("ck_campaign_meter_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["firmware_campaign.id"],
            name=op.f("fk_campaign_meter_campaign_id_firmware_campaign"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["command.id"],
            name=op.f("fk_campaign_meter_command_id_command"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meter.id"], name=op.f("fk_campaign_meter_meter_id_meter"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_campaign_meter_tenant_id_tenant"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_meter")),
        sa.UniqueConstraint("campaign_id", "meter_id", name="uq_campaign_meter_campaign_meter"),
    )
    op.create_index(
        "ix_campaign_meter_campaign_wave", "campaign_meter", ["campaign_id", "wave", "state"], unique=False
    )
    op.create_index(op.f("ix_campaign_meter_tenant_id"), "campaign_meter", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_campaign_meter_tenant_id"), table_name="campaign_meter")
    op.drop_index("ix_campaign_meter_campaign_wave", table_name="campaign_meter")
    op.drop_table("campaign_meter")
    op.drop_index(op.f("ix_meter_protection_tenant_id"), table_name="meter_protection")
    op.drop_table("meter_protection")
    op.drop_index(op.f("ix_firmware_campaign_tenant_id"), table_name="firmware_campaign")
    op.drop_table("firmware_campaign")
    op.drop_index("ix_command_request_tenant_state", table_name="command_request")
    op.drop_index(op.f("ix_command_request_tenant_id"), table_name="command_request")
    op.drop_table("command_request")
    op.drop_index(op.f("ix_no_disconnect_period_tenant_id"), table_name="no_disconnect_period")
    op.drop_table("no_disconnect_period")
