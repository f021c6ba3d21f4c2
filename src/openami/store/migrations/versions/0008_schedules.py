"""Schedules as the planner reads them, and the dispatch mark on jobs (issue 6).

A schedule gains what turns its cron into jobs: the time zone it is read in (the tenant's when null),
the lane its jobs take, how long after its slot a job may still start (``window_s``: the deadline), its
attempts and its parameters. ``job.dispatched_at`` records when a job's id was last put on the bus, so
the scheduler sends each queued job once and sends it again only when that dispatch went stale.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from openami.store.types import UTCDateTime, json_type

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="3"))
        batch_op.add_column(sa.Column("window_s", sa.Integer(), nullable=False, server_default="3600"))
        batch_op.add_column(sa.Column("max_attempts", sa.SmallInteger(), nullable=False, server_default="3"))
        batch_op.add_column(sa.Column("params", json_type(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("planned_until", UTCDateTime(), nullable=True))
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        for name in ("planned_until", "params", "max_attempts", "window_s", "lane", "timezone"):
            batch_op.drop_column(name)
