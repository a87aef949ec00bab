"""Alembic environment: the gateway's revisions, tracked in `gateway_alembic_version`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.db.migrate import VERSION_TABLE

config = context.config
# No fileConfig(): the gateway configures logging itself and alembic must not override it.

# Serialises replicas that start at the same time: the second one waits, then finds the
# database at head. hashtext() of a fixed name keeps the key readable in pg_locks.
_PG_LOCK_SQL = text("SELECT pg_advisory_xact_lock(hashtext('gateway_alembic_version'))")


def _run_migrations(connection: Connection) -> None:
    """Run on a connection that is already inside a transaction; the caller commits."""
    context.configure(
        connection=connection,
        # TimeTracker's own `alembic_version` belongs to TimeTracker: never read or write it.
        version_table=VERSION_TABLE,
        # No target_metadata: autogenerate against a TimeTracker database would propose
        # dropping its ~130 other tables. Revisions are written by hand, defensively.
        target_metadata=None,
        # SQLite cannot ALTER most things; batch mode lets revisions drop columns there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    if connection.dialect.name == "postgresql":
        connection.execute(_PG_LOCK_SQL)
    # The connection is in a transaction, so this is a no-op and the caller's commit
    # decides; all revisions of one run commit or roll back together (PostgreSQL DDL is
    # transactional).
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    # NullPool: a one-off engine that must not keep connections after the run.
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # Handed a sync connection by gateway.db.migrate through AsyncConnection.run_sync:
        # we are inside a running event loop, so no asyncio.run() here.
        _run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass config.attributes['connection']")
    asyncio.run(_run_with_own_engine(url))


if context.is_offline_mode():
    # The revisions inspect the live schema to decide what to do, so no SQL script can
    # be generated ahead of time.
    raise RuntimeError("offline (--sql) mode is not supported: revisions inspect the database")
run_migrations_online()
