"""Connection facts per integration, the timer-event outbox, and its trigger on time_entries."""

# Revision ID: 158_gateway_connector_kit
# Revises: 157_gateway_github_task_function
#
# Two tables of the gateway's own (prefixed `gateway_`), and on PostgreSQL one trigger on
# TimeTracker's `time_entries` that writes a row into the outbox in the same transaction as
# TimeTracker's own write, so a timer started or stopped in TimeTracker's UI is announced too.
#
# The trigger must never make TimeTracker's write fail: its body catches every error and only
# raises a WARNING. It reads NEW/OLD only and writes only `gateway_timer_events`. The downgrade
# drops the trigger, its function and the two tables, and nothing else.

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "158_gateway_connector_kit"
down_revision: str | Sequence[str] | None = "157_gateway_github_task_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATE = "gateway_connector_state"
EVENTS = "gateway_timer_events"
CHANNEL = "gateway_timer_events"
TRIGGER = "gateway_time_entries_timer_events"
FUNCTION = "gateway_record_timer_event"

# SECURITY DEFINER with a fixed search_path: TimeTracker may write time_entries as another role
# or with another search_path, and the event must still reach the gateway's table (the owner
# is the role that ran this migration). {schema} is the schema the gateway's tables are in.
CREATE_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_catalog AS $fn$
DECLARE
    event_kind text;
    new_id bigint;
BEGIN
    BEGIN
        IF TG_OP = 'INSERT' AND NEW.end_time IS NULL THEN
            event_kind := 'started';
        ELSIF TG_OP = 'UPDATE' AND OLD.end_time IS NULL AND NEW.end_time IS NOT NULL THEN
            event_kind := 'stopped';
        ELSE
            RETURN NULL;
        END IF;
        -- available_at in the past: due at once, whatever the skew between the database's
        -- clock and the gateway's (which decides what is due).
        INSERT INTO {schema}.{events} (kind, entry_id, user_id, created_at, available_at,
                                       attempts)
        VALUES (event_kind, NEW.id, NEW.user_id, (now() AT TIME ZONE 'UTC'),
                TIMESTAMP '1970-01-01 00:00:00', 0)
        RETURNING id INTO new_id;
        PERFORM pg_notify('{channel}', new_id::text);
    EXCEPTION WHEN OTHERS THEN
        -- TimeTracker's write goes on; the gateway only misses one announcement.
        RAISE WARNING 'gateway timer event not recorded: %', SQLERRM;
    END;
    RETURN NULL;
END;
$fn$
"""

CREATE_TRIGGER = """
CREATE TRIGGER {trigger}
AFTER INSERT OR UPDATE OF end_time ON time_entries
FOR EACH ROW EXECUTE FUNCTION {schema}.{function}()
"""


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if not inspector.has_table(STATE):
        op.create_table(
            STATE,
            sa.Column("integration_id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("last_event_at", sa.DateTime),  # naive UTC, like integrations.*_at
            sa.Column("last_event_status", sa.String(20)),
            sa.Column("last_event_detail", sa.String(500)),
            sa.Column("connected_as", sa.String(200)),
            sa.Column("last_checked_at", sa.DateTime),
            sa.Column("last_check_status", sa.String(20)),
            sa.Column("last_check_error", sa.String(500)),
        )
    if not inspector.has_table(EVENTS):
        op.create_table(
            EVENTS,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
            sa.Column("kind", sa.String(20), nullable=False),  # started, stopped
            sa.Column("entry_id", sa.Integer, nullable=False),
            sa.Column("user_id", sa.Integer, nullable=False),
            sa.Column("created_at", sa.DateTime, nullable=False),  # naive UTC
            sa.Column("available_at", sa.DateTime, nullable=False),  # next attempt, naive UTC
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("locked_until", sa.DateTime),  # a dispatcher's lease
            sa.Column("done_subscribers", sa.Text),  # names, one per line
            sa.Column("done_at", sa.DateTime),
            sa.Column("last_error", sa.String(500)),
        )
        # The dispatcher's claim query: pending events by due time.
        op.create_index(f"ix_{EVENTS}_pending", EVENTS, ["done_at", "available_at"])
    if bind.dialect.name == "postgresql":
        schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
        names = {
            "schema": _quoted(schema),
            "function": FUNCTION,
            "events": EVENTS,
            "channel": CHANNEL,
            "trigger": TRIGGER,
        }
        op.execute(CREATE_FUNCTION.format(**names))
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON time_entries")
        op.execute(CREATE_TRIGGER.format(**names))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON time_entries")
        schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
        op.execute(f"DROP FUNCTION IF EXISTS {_quoted(schema)}.{FUNCTION}()")
    inspector = sa.inspect(bind)
    if inspector.has_table(EVENTS):
        op.drop_index(f"ix_{EVENTS}_pending", table_name=EVENTS)
        op.drop_table(EVENTS)
    if inspector.has_table(STATE):
        op.drop_table(STATE)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
