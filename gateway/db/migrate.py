"""Run the gateway's Alembic migrations from code, on the app's own async engine."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import assets
from gateway.db.database import Database

# The repository's migrations/ folder (packaged as gateway/assets/migrations in a wheel).
MIGRATIONS_DIR = assets.directory("migrations")
# The gateway's own version table; TimeTracker's `alembic_version` is never touched.
VERSION_TABLE = "gateway_alembic_version"

# Alembic keeps the running migration in module globals (alembic.context, alembic.op), so two
# runs interleaving on one event loop would trample each other; they take turns. Across
# processes (replicas), env.py serialises them with an advisory lock on PostgreSQL.
_run_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def alembic_config(url: str) -> Config:
    """An Alembic config built in code (there is no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Config values go through configparser interpolation: a '%' in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade to `revision` in one transaction on `engine`."""
    await _run(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade to `revision` ("base" removes what the gateway added)."""
    await _run(engine, command.downgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: _migration_context(c).get_current_revision())


async def pending(engine: AsyncEngine) -> bool:
    """True when the database is behind the newest revision."""
    heads = set(ScriptDirectory.from_config(_config_for(engine)).get_heads())
    async with engine.connect() as conn:
        current = await conn.run_sync(lambda c: set(_migration_context(c).get_current_heads()))
    return current != heads


def _config_for(engine: AsyncEngine) -> Config:
    return alembic_config(engine.url.render_as_string(hide_password=False))


def _migration_context(conn: Connection) -> MigrationContext:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})


async def _run(engine: AsyncEngine, fn: Callable[..., Any], revision: str) -> None:
    cfg = _config_for(engine)

    def run(sync_conn: Connection) -> None:
        # migrations/env.py uses this connection instead of building its own engine, so
        # it runs inside the caller's event loop and this transaction.
        cfg.attributes["connection"] = sync_conn
        fn(cfg, revision)

    lock = _run_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, engine.begin() as conn:
        await conn.run_sync(run)


async def upgrade_database(db: Database) -> None:
    """Migrate the app's database to head on an engine without the request timeouts."""
    engine = db.maintenance_engine()  # DDL may outlast GATEWAY_DB_TIMEOUT
    try:
        await upgrade(engine)
    finally:
        if engine is not db.engine:
            await engine.dispose()


async def move_to(db: Database, target: str) -> tuple[str | None, str | None]:
    """Upgrade or downgrade to `target` ("head", "base" or a revision id): (before, after).

    The gateway's history is linear, so the direction follows from the two positions.
    ValueError for a revision the gateway does not know.
    """
    scripts = ScriptDirectory.from_config(alembic_config(db.url))
    order = [r.revision for r in reversed(list(scripts.walk_revisions()))]  # base → head
    position = {None: -1, "base": -1, **{rev: i for i, rev in enumerate(order)}}
    wanted = order[-1] if target == "head" else target
    if wanted not in position:
        raise ValueError(f"unknown revision {target!r} (known: base, {', '.join(order)})")
    engine = db.maintenance_engine()
    try:
        before = await current_revision(engine)
        if position[wanted] > position.get(before, -1):
            await upgrade(engine, wanted)
        elif position[wanted] < position.get(before, -1):
            await downgrade(engine, "base" if wanted in (None, "base") else wanted)
        return before, await current_revision(engine)
    finally:
        if engine is not db.engine:
            await engine.dispose()
