"""Baseline: create the TimeTracker tables the gateway uses where they do not exist yet."""

# Revision ID: 0001_baseline
# Revises: (none)
# A TimeTracker database already has all of these tables (with many more columns), so it is
# left alone; a standalone database gets just the subset, with TimeTracker's names, types,
# NOT NULLs, defaults, index and foreign-key names. Self-contained on purpose: revisions must
# not follow later changes to gateway/db/models.py. users.github_username and
# tasks.external_ref are added by 155_add_integration_columns, as on TimeTracker.

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("CURRENT_TIMESTAMP")
# TimeTracker's own integrations.config is `json`; where the gateway creates it, JSONB.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# TimeTracker's partial index: at most one running timer per user.
RUNNING = sa.text("end_time IS NULL")


def _users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("role", sa.String(20), nullable=False, server_default="user"),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("updated_at", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("full_name", sa.String(200)),
        sa.Column("email", sa.String(200)),
        sa.Column("timezone", sa.String(50)),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("slack_user_id", sa.String(50)),
    )
    op.create_index("idx_users_username", "users", ["username"], unique=True)
    op.create_index("ix_users_slack_user_id", "users", ["slack_user_id"], unique=True)


def _clients() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime, nullable=False, server_default=NOW),
    )
    op.create_index("idx_clients_name", "clients", ["name"], unique=True)


def _projects() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("client_id", sa.Integer),
        sa.Column("billable", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("status", sa.String(20), nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime, server_default=NOW),
        sa.Column("updated_at", sa.DateTime, server_default=NOW),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name="projects_client_id_fkey", ondelete="CASCADE"
        ),
    )
    op.create_index("idx_projects_client_id", "projects", ["client_id"])
    op.create_index("idx_projects_status", "projects", ["status"])


def _tasks() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text),
        # TimeTracker's legacy default; the gateway always writes status explicitly.
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("priority", sa.String(20), nullable=False, server_default="medium"),
        sa.Column("assigned_to", sa.Integer),
        sa.Column("created_by", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("started_at", sa.DateTime),
        sa.Column("completed_at", sa.DateTime),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="tasks_project_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["assigned_to"], ["users.id"], name="tasks_assigned_to_fkey", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name="tasks_created_by_fkey", ondelete="CASCADE"
        ),
    )
    op.create_index("idx_tasks_project_id", "tasks", ["project_id"])
    op.create_index("idx_tasks_status", "tasks", ["status"])


def _time_entries() -> None:
    op.create_table(
        "time_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("project_id", sa.Integer),
        sa.Column("task_id", sa.Integer),
        sa.Column("start_time", sa.DateTime, nullable=False),
        sa.Column("end_time", sa.DateTime),
        sa.Column("notes", sa.Text),
        sa.Column("tags", sa.String(500)),
        sa.Column("billable", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("source", sa.String(50)),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime, nullable=False, server_default=NOW),
        sa.Column("duration_seconds", sa.Integer),
        sa.Column("paid", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("break_seconds", sa.Integer, server_default=sa.text("0")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="time_entries_user_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_time_entries_project_id", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="time_entries_task_id_fkey", ondelete="SET NULL"
        ),
    )
    op.create_index(
        "ux_time_entries_one_active_per_user",
        "time_entries",
        ["user_id"],
        unique=True,
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )
    op.create_index("ix_time_entries_user_start_time", "time_entries", ["user_id", "start_time"])
    op.create_index("idx_time_entries_project_id", "time_entries", ["project_id"])


def _integrations() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("user_id", sa.Integer),
        # No server defaults on is_active/created_at/updated_at: TimeTracker has none either,
        # so code that forgets them fails here as it would on TimeTracker.
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("config", JSON_TYPE),
        sa.Column("last_sync_at", sa.DateTime),
        sa.Column("last_sync_status", sa.String(20)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("is_global", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="integrations_user_id_fkey"),
    )
    op.create_index("ix_integrations_provider", "integrations", ["provider"])
    op.create_index("ix_integrations_user_id", "integrations", ["user_id"])


def _settings() -> None:
    op.create_table(
        "settings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("timezone", sa.String(50), nullable=False, server_default="Europe/Rome"),
        sa.Column("rounding_minutes", sa.Integer, nullable=False, server_default=sa.text("1")),
    )


def _api_tokens() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("token_prefix", sa.String(10), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("scopes", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("last_used_at", sa.DateTime),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="api_tokens_user_id_fkey"),
    )
    op.create_index("ix_api_tokens_token_hash", "api_tokens", ["token_hash"], unique=True)
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])


# In foreign-key order: a table is created after the tables it references.
TABLES: dict[str, Callable[[], None]] = {
    "users": _users,
    "clients": _clients,
    "projects": _projects,
    "tasks": _tasks,
    "time_entries": _time_entries,
    "integrations": _integrations,
    "settings": _settings,
    "api_tokens": _api_tokens,
}


def _existing_tables() -> set[str]:
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade() -> None:
    existing = _existing_tables()
    for name, create in TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    existing = _existing_tables()
    # TimeTracker's version table marks its database: its tables are TimeTracker's data and
    # stay. Only a standalone database, where the gateway created them, loses them.
    if "alembic_version" in existing:
        return
    for name in reversed(TABLES):
        if name in existing:
            op.drop_table(name)
