"""The gateway's own table of handled webhook deliveries (de-duplication of redeliveries)."""

# Revision ID: 156_gateway_webhook_deliveries
# Revises: 155_add_integration_columns
# A table of the gateway's own, prefixed `gateway_`: nothing of TimeTracker's is touched.

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "156_gateway_webhook_deliveries"
down_revision: str | Sequence[str] | None = "155_add_integration_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gateway_webhook_deliveries"


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("delivery_id", sa.String(100), nullable=False),
        sa.Column("integration_id", sa.Integer),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("provider", "delivery_id", name="uq_gateway_webhook_delivery"),
    )
    # Pruning old ids scans by age.
    op.create_index("ix_gateway_webhook_deliveries_received_at", TABLE, ["received_at"])


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        op.drop_index("ix_gateway_webhook_deliveries_received_at", table_name=TABLE)
        op.drop_table(TABLE)
