"""Add users.github_username and tasks.external_ref (indexed) where they are missing."""

# Revision ID: 155_add_integration_columns
# Revises: 0001_baseline
# TimeTracker added both columns itself in its own revision 155; older TimeTracker databases
# and standalone ones lack them. Each step runs only if needed, so re-running is harmless.
# What this revision added is recorded in `gateway_schema_changes`, and the downgrade removes
# only that: on a TimeTracker that already had the columns they are TimeTracker's and stay.

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations
from sqlalchemy.engine import Connection

revision: str = "155_add_integration_columns"
down_revision: str | Sequence[str] | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGES = "gateway_schema_changes"
INDEX = "ix_tasks_external_ref"

changes = sa.table(
    CHANGES,
    sa.column("revision", sa.String),
    sa.column("table_name", sa.String),
    sa.column("column_name", sa.String),
    sa.column("index_name", sa.String),
)


def _new_columns() -> list[tuple[str, sa.Column]]:
    # Fresh Column objects per call: a Column can be attached to only one table.
    return [
        ("users", sa.Column("github_username", sa.String(100), nullable=True)),
        ("tasks", sa.Column("external_ref", sa.String(200), nullable=True)),
    ]


def _inspector() -> sa.Inspector:
    # A new inspector per question: each one caches what it has reflected.
    return sa.inspect(op.get_bind())


def _has_table(table: str) -> bool:
    return _inspector().has_table(table)


def _has_column(table: str, column: str) -> bool:
    return any(c["name"] == column for c in _inspector().get_columns(table))


def _has_index(table: str, index: str) -> bool:
    return any(i["name"] == index for i in _inspector().get_indexes(table))


def upgrade() -> None:
    added: list[dict[str, str | None]] = []
    for table, column in _new_columns():
        if not _has_column(table, column.name):
            op.add_column(table, column)
            added.append({"table_name": table, "column_name": column.name, "index_name": None})
    # Checked apart from the column: a database may have the column without the index.
    if not _has_index("tasks", INDEX):
        op.create_index(INDEX, "tasks", ["external_ref"])
        added.append({"table_name": "tasks", "column_name": None, "index_name": INDEX})
    if not added:
        return
    if not _has_table(CHANGES):
        op.create_table(
            CHANGES,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("revision", sa.String(100), nullable=False),
            sa.Column("table_name", sa.String(100), nullable=False),
            sa.Column("column_name", sa.String(100)),
            sa.Column("index_name", sa.String(100)),
            sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.now()),
        )
    op.bulk_insert(changes, [{"revision": revision, **row} for row in added])


def downgrade() -> None:
    if not _has_table(CHANGES):
        return
    bind = op.get_bind()
    mine = changes.c.revision == revision
    rows = bind.execute(
        sa.select(changes.c.table_name, changes.c.column_name, changes.c.index_name).where(mine)
    ).all()
    # Indexes first: SQLite will not drop a column that an index uses.
    for table, _, index in rows:
        if index and _has_index(table, index):
            with _batch(bind, table) as batch:
                batch.drop_index(index)
    for table, column, _ in rows:
        if column and _has_column(table, column):
            with _batch(bind, table) as batch:
                batch.drop_column(column)
    bind.execute(sa.delete(changes).where(mine))
    if not bind.execute(sa.select(sa.func.count()).select_from(changes)).scalar():
        op.drop_table(CHANGES)


@contextmanager
def _batch(bind: Connection, table: str) -> Iterator[BatchOperations]:
    """Batch ALTER that never copies-and-swaps a table with foreign keys enforced.

    Alembic's SQLite batch mode rebuilds a table to drop a column, and its DROP TABLE step
    runs an implicit DELETE: with foreign_keys=ON that cascades (time_entries.user_id is
    ON DELETE CASCADE) and would wipe rows of other tables. SQLite >= 3.35 drops columns
    natively, so no rebuild is needed; older versions may rebuild only with enforcement off.
    """
    recreate = "auto"
    if bind.dialect.name == "sqlite":
        if (bind.dialect.server_version_info or (0,)) >= (3, 35):
            recreate = "never"
        elif bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
            raise RuntimeError(
                "SQLite < 3.35 must rebuild the table to drop a column; "
                "run the downgrade with PRAGMA foreign_keys=OFF"
            )
    with op.batch_alter_table(table, recreate=recreate) as batch:
        yield batch
