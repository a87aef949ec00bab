"""The gateway's own table linking Google Calendar events to time entries (sync idempotency)."""

# Revision ID: 159_gateway_calendar_links
# Revises: 158_gateway_connector_kit
#
# One row per (integration, event): an event imported as a time entry, or an entry exported as
# an event. The unique key makes two syncs at once (two replicas, a manual sync during the job)
# create nothing twice. A table of the gateway's own, prefixed `gateway_`: nothing of
# TimeTracker's is touched; the downgrade drops it and nothing else.

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "159_gateway_calendar_links"
down_revision: str | Sequence[str] | None = "158_gateway_connector_kit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gateway_calendar_links"


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("integration_id", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("entry_id", sa.Integer, nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),  # import, export
        sa.Column("event_updated", sa.DateTime),  # naive UTC, Google's `updated`
        sa.Column("entry_updated_at", sa.DateTime),  # the entry's updated_at when we wrote it
        sa.Column("created_at", sa.DateTime, nullable=False),  # naive UTC
        sa.UniqueConstraint("integration_id", "event_id", name="uq_gateway_calendar_link"),
    )
    # Export leaves out the entries an integration imported or exported already.
    op.create_index("ix_gateway_calendar_links_entry", TABLE, ["integration_id", "entry_id"])


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        op.drop_index("ix_gateway_calendar_links_entry", table_name=TABLE)
        op.drop_table(TABLE)
