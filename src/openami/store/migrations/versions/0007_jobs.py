"""Jobs as the head-end runs them (ADR 0013): a lane, when a job may start and must have started, the
key that makes planning idempotent, the communication path it is throttled by, and the lease of the
worker running it. The ``job`` table was not used before, so no rows need converting.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from openami.store.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.alter_column("state", existing_type=sa.String(16), server_default="planned")
        batch_op.add_column(sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="3"))
        batch_op.add_column(sa.Column("not_before", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("deadline", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("dedup_key", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("path", sa.String(128), nullable=True))
        batch_op.add_column(sa.Column("schedule_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("worker", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch_op.create_foreign_key(
            "fk_job_schedule_id_schedule", "schedule", ["schedule_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_unique_constraint("uq_job_tenant_dedup", ["tenant_id", "dedup_key"])
        batch_op.create_index("ix_job_dispatch", ["state", "lane", "not_before"])
        batch_op.create_index("ix_job_lease", ["state", "lease_until"])
        batch_op.create_index("ix_job_path", ["path", "state"])


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_path")
        batch_op.drop_index("ix_job_lease")
        batch_op.drop_index("ix_job_dispatch")
        batch_op.drop_constraint("uq_job_tenant_dedup", type_="unique")
        batch_op.drop_constraint("fk_job_schedule_id_schedule", type_="foreignkey")
        for name in (
            "lease_until",
            "worker",
            "schedule_id",
            "path",
            "dedup_key",
            "deadline",
            "not_before",
            "lane",
        ):
            batch_op.drop_column(name)
        batch_op.alter_column("state", existing_type=sa.String(16), server_default="pending")
