"""Device keys may hold a meter's master key (KEK, kind ``kek``), the key that new keys are wrapped in
when the head-end rotates them (DLMS security setup, global_key_transfer). Only the kind check widens.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_NAME = "ck_device_key_kind_known"


def upgrade() -> None:
    with op.batch_alter_table("device_key", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(_NAME), type_="check")
        batch_op.create_check_constraint(op.f(_NAME), "kind IN ('ek','ak','lls','hls','kek')")


def downgrade() -> None:
    op.execute("DELETE FROM device_key WHERE kind = 'kek'")
    with op.batch_alter_table("device_key", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(_NAME), type_="check")
        batch_op.create_check_constraint(op.f(_NAME), "kind IN ('ek','ak','lls','hls')")
