"""A gateway-owned PL/pgSQL function: one round trip per GitHub webhook delivery on PostgreSQL."""

# Revision ID: 157_gateway_github_task_function
# Revises: 156_gateway_webhook_deliveries
# PostgreSQL only (SQLite keeps the Python path in gateway/connectors/github/service.py).
# The function is the gateway's own, prefixed `gateway_`: it reads and writes rows of
# `tasks` and `gateway_webhook_deliveries` like the Python code does, and creates, alters or
# drops nothing of TimeTracker's. The downgrade drops only the function.
#
# It holds no business rules: the caller computes the task's name, description, priority,
# status, completed_at, whether a missing task may be created and whether the label filter
# lets the issue in, and the advisory lock key. The function only records the delivery id,
# takes the lock, looks for the task and inserts or updates it, in one statement (so in one
# transaction when called in autocommit mode, or inside the caller's transaction).

from collections.abc import Sequence

from alembic import op

revision: str = "157_gateway_github_task_function"
down_revision: str | Sequence[str] | None = "156_gateway_webhook_deliveries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "gateway_github_task_upsert(text, text, integer, timestamp without time zone, bigint, "
    "integer, text, boolean, boolean, text, text, text, text, timestamp without time zone, "
    "integer, timestamp without time zone)"
)

CREATE = """
CREATE OR REPLACE FUNCTION gateway_github_task_upsert(
    p_provider text,                 -- gateway_webhook_deliveries.provider
    p_delivery_id text,              -- NULL: no de-duplication (sync, assignment path)
    p_integration_id integer,
    p_received_at timestamp without time zone,
    p_lock_key bigint,               -- pg_advisory_xact_lock key of (project, issue)
    p_project_id integer,
    p_external_ref text,
    p_create boolean,                -- may a missing task be created
    p_filter_ok boolean,             -- does the issue pass the integration's label filter
    p_status text,                   -- NULL: leave the status alone ('todo' on creation)
    p_name text,
    p_description text,
    p_priority text,
    p_completed_at timestamp without time zone,  -- written with a status change or creation
    p_created_by integer,
    p_now timestamp without time zone
) RETURNS TABLE (outcome text, task_id integer)
LANGUAGE plpgsql VOLATILE
AS $fn$
-- outcome: duplicate | missing | filtered | created | updated | unchanged
DECLARE
    found_id integer;
    found_name text;
    found_description text;
    found_priority text;
    found_status text;
    status_changes boolean;
BEGIN
    IF p_delivery_id IS NOT NULL THEN
        INSERT INTO gateway_webhook_deliveries (provider, delivery_id, integration_id, received_at)
        VALUES (p_provider, p_delivery_id, p_integration_id, p_received_at)
        ON CONFLICT (provider, delivery_id) DO NOTHING;
        IF NOT FOUND THEN
            -- Recorded before, or by a concurrent transaction that committed first (the
            -- insert waited for it): its work stands.
            RETURN QUERY SELECT 'duplicate'::text, NULL::integer;
            RETURN;
        END IF;
    END IF;

    PERFORM pg_advisory_xact_lock(p_lock_key);

    -- A separate statement after the lock: in a VOLATILE function each statement takes a new
    -- READ COMMITTED snapshot, so this sees a task committed by whoever held the lock before.
    SELECT t.id, t.name, t.description, t.priority, t.status
      INTO found_id, found_name, found_description, found_priority, found_status
      FROM tasks AS t
     WHERE t.project_id = p_project_id AND t.external_ref = p_external_ref
     ORDER BY t.id
     LIMIT 1;

    IF found_id IS NULL THEN
        IF NOT p_create THEN
            RETURN QUERY SELECT 'missing'::text, NULL::integer;
            RETURN;
        END IF;
        IF NOT p_filter_ok THEN
            RETURN QUERY SELECT 'filtered'::text, NULL::integer;
            RETURN;
        END IF;
        INSERT INTO tasks AS t (project_id, name, description, priority, status, created_by,
                                created_at, updated_at, completed_at, external_ref)
        VALUES (p_project_id, p_name, p_description, p_priority, COALESCE(p_status, 'todo'),
                p_created_by, p_now, p_now, p_completed_at, p_external_ref)
        RETURNING t.id INTO found_id;
        RETURN QUERY SELECT 'created'::text, found_id;
        RETURN;
    END IF;

    status_changes := p_status IS NOT NULL AND found_status IS DISTINCT FROM p_status;
    IF NOT status_changes
       AND found_name IS NOT DISTINCT FROM p_name
       AND found_description IS NOT DISTINCT FROM p_description
       AND found_priority IS NOT DISTINCT FROM p_priority THEN
        RETURN QUERY SELECT 'unchanged'::text, found_id;
        RETURN;
    END IF;
    UPDATE tasks AS t
       SET name = p_name,
           description = p_description,
           priority = p_priority,
           updated_at = p_now,
           status = CASE WHEN status_changes THEN p_status ELSE t.status END,
           completed_at = CASE WHEN status_changes THEN p_completed_at ELSE t.completed_at END
     WHERE t.id = found_id;
    RETURN QUERY SELECT 'updated'::text, found_id;
END;
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
