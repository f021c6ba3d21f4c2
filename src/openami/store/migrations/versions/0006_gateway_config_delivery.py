"""Gateway link: reliable CONFIG delivery. The last configuration pushed to a gateway is kept, sealed
under the master key (it may carry meter keys), with when it last went to the broker, so the head-end
sends it again until the gateway's HEALTH reports its version (``docs/drivers/gateway-link.md``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from openami.store.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_link", schema=None) as batch_op:
        batch_op.add_column(sa.Column("config_ciphertext", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("config_sent_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_link", schema=None) as batch_op:
        batch_op.drop_column("config_sent_at")
        batch_op.drop_column("config_ciphertext")
