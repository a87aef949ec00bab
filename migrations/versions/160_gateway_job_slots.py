"""The cron slots each scheduled job has run, so a slot runs once whatever the replicas."""

# Revision ID: 160_gateway_job_slots
# Revises: 159_gateway_calendar_links
# A table of the gateway's own (prefixed `gateway_`): nothing of TimeTracker's is touched.

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "160_gateway_job_slots"
down_revision: str | Sequence[str] | None = "159_gateway_calendar_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gateway_job_slots"


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("job", sa.String(100), primary_key=True),
        sa.Column("slot", sa.DateTime, primary_key=True),  # the cron time, naive UTC
        sa.Column("claimed_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        op.drop_table(TABLE)
