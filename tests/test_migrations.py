"""The gateway's migrations: standalone SQLite and PostgreSQL, and real TimeTracker schemas."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from gateway.db.database import Database
from gateway.db.migrate import alembic_config, current_revision, downgrade, pending, upgrade
from tests.conftest import FIXTURES

REV_155 = "155_add_integration_columns"
# Later revisions (e.g. the gateway's own tables) build on 155: tests run them all.
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
TT_HEAD = "171_merge_kanban_feature_heads"
TABLES = {
    "users",
    "clients",
    "projects",
    "tasks",
    "time_entries",
    "integrations",
    "settings",
    "api_tokens",
}
PG_URL = os.environ.get("TEST_DATABASE_URL", "")
REPO = Path(__file__).resolve().parents[1]


def test_revision_chain_is_linear_from_the_baseline() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    chain = [s.revision for s in scripts.walk_revisions("base", "heads")][::-1]
    assert chain[:2] == ["0001_baseline", REV_155]
    assert scripts.get_heads() == [HEAD]


# --- SQLite (always runs) --------------------------------------------------------------------


def _sqlite_schema(path: Path) -> set[tuple[Any, ...]]:
    """Every table, index and their DDL, read with the stdlib driver."""
    with sqlite3.connect(path) as conn:
        return set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def _sqlite_names(path: Path, kind: str) -> set[str]:
    return {name for type_, name, _, _ in _sqlite_schema(path) if type_ == kind}


def _sqlite_columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


async def _version(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT version_num FROM gateway_alembic_version"))
        return [r[0] for r in rows]


async def test_sqlite_upgrade_rerun_and_downgrade(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    # The app's own engine: foreign keys enforced, as in production.
    db = Database(f"sqlite+aiosqlite:///{path}")
    engine = db.engine
    try:
        assert await current_revision(engine) is None
        assert await pending(engine)

        await upgrade(engine, REV_155)

        assert TABLES <= _sqlite_names(path, "table")
        assert "github_username" in _sqlite_columns(path, "users")
        assert "external_ref" in _sqlite_columns(path, "tasks")
        indexes = _sqlite_names(path, "index")
        assert {"ix_tasks_external_ref", "ux_time_entries_one_active_per_user"} <= indexes
        assert await _version(engine) == [REV_155]
        assert await pending(engine) == (HEAD != REV_155)

        await upgrade(engine)
        assert await _version(engine) == [HEAD]
        assert await current_revision(engine) == HEAD
        assert not await pending(engine)
        # TimeTracker's version table is not the gateway's.
        assert "alembic_version" not in _sqlite_names(path, "table")

        migrated = _sqlite_schema(path)
        await upgrade(engine)
        assert _sqlite_schema(path) == migrated

        # Data must survive dropping the two columns: a table rebuild with foreign keys on
        # would cascade from users into time_entries.
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO users (id, username) VALUES (1, 'alice')"))
            await conn.execute(text("INSERT INTO projects (id, name) VALUES (1, 'Website')"))
            await conn.execute(
                text(
                    "INSERT INTO time_entries (user_id, project_id, start_time, source) "
                    "VALUES (1, 1, :t, 'manual')"
                ),
                {"t": datetime(2026, 1, 1, 9)},
            )
        await downgrade(engine, "0001_baseline")
        assert "github_username" not in _sqlite_columns(path, "users")
        assert "external_ref" not in _sqlite_columns(path, "tasks")
        assert "ix_tasks_external_ref" not in _sqlite_names(path, "index")
        assert "gateway_schema_changes" not in _sqlite_names(path, "table")
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM time_entries"))).scalar() == 1

        # Back up and all the way down: only the (empty) version table is left.
        await upgrade(engine)
        assert "github_username" in _sqlite_columns(path, "users")
        await downgrade(engine, "base")
        assert _sqlite_names(path, "table") == {"gateway_alembic_version"}
        assert await _version(engine) == []
        assert await current_revision(engine) is None
    finally:
        await db.dispose()


async def test_sqlite_existing_timetracker_tables_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "tt.db"
    # A miniature TimeTracker: its own version table and a users table with its own columns.
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
            INSERT INTO alembic_version VALUES ('171_merge_kanban_feature_heads');
            CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(80) NOT NULL,
                                theme_preference VARCHAR(10));
            INSERT INTO users (username, theme_preference) VALUES ('alice', 'dark');
            """
        )
    users_ddl = {row for row in _sqlite_schema(path) if row[1] == "users"}
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(engine)
        assert _sqlite_columns(path, "users") == {
            "id",
            "username",
            "theme_preference",
            "github_username",
        }
        await downgrade(engine, "base")
        # Only the column the gateway added went away; TimeTracker's tables stay.
        assert {row for row in _sqlite_schema(path) if row[1] == "users"} == users_ddl
        assert TABLES - {"users"} <= _sqlite_names(path, "table")
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT * FROM alembic_version").fetchall() == [(TT_HEAD,)]
            assert conn.execute("SELECT username, theme_preference FROM users").fetchall() == [
                ("alice", "dark")
            ]
    finally:
        await engine.dispose()


def test_env_builds_its_own_engine_without_a_connection(tmp_path: Path) -> None:
    """The plain Alembic command API (no connection handed over) runs env.py's asyncio.run."""
    path = tmp_path / "cli.db"
    cfg = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(cfg, "head")
    assert TABLES <= _sqlite_names(path, "table")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM gateway_alembic_version").fetchall() == [
            (HEAD,)
        ]
    command.downgrade(cfg, "base")
    assert _sqlite_names(path, "table") == {"gateway_alembic_version"}


# --- PostgreSQL (TEST_DATABASE_URL=postgresql+asyncpg://...) -----------------------------------


def _schema_sql() -> Path:
    return FIXTURES / "timetracker" / "schema.sql"


def _server_url() -> URL:
    if not PG_URL.startswith("postgresql+asyncpg://"):
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL=postgresql+asyncpg://...")
    return make_url(PG_URL)


async def _pg_connect(url: URL, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=database or url.database,
    )


@dataclass
class PgDatabase:
    url: URL
    name: str
    engine: AsyncEngine

    async def execute(self, sql: str) -> None:
        # A fresh connection each time: schema.sql clears search_path on the one it runs on.
        conn = await _pg_connect(self.url, self.name)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fetch(self, sql: str) -> list[asyncpg.Record]:
        conn = await _pg_connect(self.url, self.name)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    async def load_timetracker(self) -> None:
        await self.execute(_schema_sql().read_text())


@pytest.fixture
async def pg_db() -> AsyncIterator[PgDatabase]:
    """A new, empty database on the TEST_DATABASE_URL server, dropped afterwards."""
    url = _server_url()
    name = f"gw_mig_{uuid.uuid4().hex[:12]}"
    admin = await _pg_connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    engine = create_async_engine(url.set(database=name), poolclass=NullPool)
    try:
        yield PgDatabase(url, name, engine)
    finally:
        await engine.dispose()
        admin = await _pg_connect(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


Snapshot = dict[str, set[tuple[Any, ...]]]

# Each query's first column is the table an object belongs to (used to set the gateway's aside).
_SNAPSHOT_QUERIES = {
    "tables": """
        SELECT table_name, table_type FROM information_schema.tables
        WHERE table_schema = 'public'""",
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, udt_name,
               character_maximum_length, numeric_precision, numeric_scale,
               is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = 'public'""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal""",
    "sequences": """
        SELECT sequence_name, data_type FROM information_schema.sequences
        WHERE sequence_schema = 'public'""",
    "types": """
        SELECT t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0""",
}


async def _snapshot(db: PgDatabase) -> Snapshot:
    snap: Snapshot = {}
    for key, sql in _SNAPSHOT_QUERIES.items():
        snap[key] = {tuple(row) for row in await db.fetch(sql)}
    has_tt_version = any(t == "alembic_version" for t, _ in snap["tables"])
    snap["alembic_version"] = (
        {tuple(r) for r in await db.fetch("SELECT version_num FROM alembic_version")}
        if has_tt_version
        else set()
    )
    return snap


def _timetracker_part(snap: Snapshot) -> Snapshot:
    """The snapshot without the gateway's own objects: its tables (and their indexes,
    sequences...) and its triggers (named gateway_*, on TimeTracker's time_entries)."""
    return {
        key: {
            row
            for row in rows
            if not str(row[0]).startswith("gateway_")
            and not (key == "triggers" and str(row[1]).startswith("gateway_"))
        }
        for key, rows in snap.items()
    }


TIMER_TRIGGER = ("time_entries", "gateway_time_entries_timer_events")


def _triggers(snap: Snapshot) -> set[tuple[str, str]]:
    return {(str(r[0]), str(r[1])) for r in snap["triggers"]}


def _gateway_tables(snap: Snapshot) -> set[str]:
    return {t for t, _ in snap["tables"] if t.startswith("gateway_")}


def _diff(before: Snapshot, after: Snapshot) -> dict[str, tuple[set[Any], set[Any]]]:
    """{category: (removed, added)} for the categories that changed."""
    return {
        key: (before[key] - after[key], after[key] - before[key])
        for key in before
        if before[key] != after[key]
    }


async def _gateway_version(db: PgDatabase) -> list[str]:
    return [r[0] for r in await db.fetch("SELECT version_num FROM gateway_alembic_version")]


async def test_pg_older_timetracker_gets_only_the_two_columns(pg_db: PgDatabase) -> None:
    await pg_db.load_timetracker()
    # Mimic a TimeTracker from before its revision 155.
    await pg_db.execute(
        """
        DROP INDEX public.ix_tasks_external_ref;
        ALTER TABLE public.tasks DROP COLUMN external_ref;
        ALTER TABLE public.users DROP COLUMN github_username;
        """
    )
    original = await _snapshot(pg_db)
    assert original["alembic_version"] == {(TT_HEAD,)}
    assert _gateway_tables(original) == set()

    await upgrade(pg_db.engine)
    migrated = await _snapshot(pg_db)

    diff = _diff(_timetracker_part(original), _timetracker_part(migrated))
    assert set(diff) == {"columns", "indexes"}
    removed, added = diff["columns"]
    assert removed == set()
    # (table, column, type, length, nullable, default)
    assert {(r[0], r[1], r[3], r[5], r[8], r[9]) for r in added} == {
        ("users", "github_username", "character varying", 100, "YES", None),
        ("tasks", "external_ref", "character varying", 200, "YES", None),
    }
    assert diff["indexes"] == (
        set(),
        {
            (
                "tasks",
                "ix_tasks_external_ref",
                "CREATE INDEX ix_tasks_external_ref ON public.tasks USING btree (external_ref)",
            )
        },
    )
    assert {"gateway_alembic_version", "gateway_schema_changes"} <= _gateway_tables(migrated)
    assert migrated["alembic_version"] == {(TT_HEAD,)}
    assert await _gateway_version(pg_db) == [HEAD]
    recorded = await pg_db.fetch(
        "SELECT revision, table_name, column_name, index_name FROM gateway_schema_changes"
    )
    assert {tuple(r) for r in recorded} == {
        (REV_155, "users", "github_username", None),
        (REV_155, "tasks", "external_ref", None),
        (REV_155, "tasks", None, "ix_tasks_external_ref"),
    }

    await upgrade(pg_db.engine)
    assert await _snapshot(pg_db) == migrated
    assert len(await pg_db.fetch("SELECT 1 FROM gateway_schema_changes")) == 3

    await downgrade(pg_db.engine, "base")
    restored = await _snapshot(pg_db)
    assert _timetracker_part(restored) == _timetracker_part(original)
    assert _gateway_tables(restored) <= {"gateway_alembic_version"}
    assert await current_revision(pg_db.engine) is None


async def test_pg_real_timetracker_is_untouched_both_ways(pg_db: PgDatabase) -> None:
    await pg_db.load_timetracker()
    original = await _snapshot(pg_db)

    await upgrade(pg_db.engine)
    migrated = await _snapshot(pg_db)
    assert _timetracker_part(migrated) == _timetracker_part(original)
    # The one thing on a TimeTracker table: the timer-event trigger (migration 158).
    assert _triggers(migrated) - _triggers(original) == {TIMER_TRIGGER}
    # Nothing added, so nothing to record.
    assert "gateway_alembic_version" in _gateway_tables(migrated)
    assert "gateway_schema_changes" not in _gateway_tables(migrated)
    assert await _gateway_version(pg_db) == [HEAD]
    assert not await pending(pg_db.engine)

    await downgrade(pg_db.engine, "base")
    restored = await _snapshot(pg_db)
    assert _timetracker_part(restored) == _timetracker_part(original)
    assert _triggers(restored) == _triggers(original)
    columns = {(r[0], r[1]) for r in restored["columns"]}
    assert {("users", "github_username"), ("tasks", "external_ref")} <= columns
    assert restored["alembic_version"] == {(TT_HEAD,)}


async def test_pg_empty_database_gets_the_tables(pg_db: PgDatabase) -> None:
    assert await pending(pg_db.engine)
    await upgrade(pg_db.engine)

    async with pg_db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert TABLES | {"gateway_alembic_version", "gateway_schema_changes"} <= names
    # Whatever else the gateway creates is its own, prefixed table.
    assert all(n.startswith("gateway_") for n in names - TABLES)
    config_type = await pg_db.fetch(
        "SELECT udt_name FROM information_schema.columns "
        "WHERE table_name = 'integrations' AND column_name = 'config'"
    )
    assert config_type[0][0] == "jsonb"

    # TimeTracker's partial unique index: one running timer per user, any number stopped.
    insert = text(
        "INSERT INTO time_entries (user_id, start_time, end_time, source) "
        "VALUES (1, :start, :end, 'manual')"
    )
    async with pg_db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO users (id, username) VALUES (1, 'alice')"))
        await conn.execute(
            insert, {"start": datetime(2026, 1, 1, 9), "end": datetime(2026, 1, 1, 10)}
        )
        await conn.execute(insert, {"start": datetime(2026, 1, 1, 11), "end": None})
    with pytest.raises(IntegrityError, match="ux_time_entries_one_active_per_user"):
        async with pg_db.engine.begin() as conn:
            await conn.execute(insert, {"start": datetime(2026, 1, 1, 12), "end": None})

    # Standalone (no TimeTracker alembic_version): a full downgrade removes the tables.
    await downgrade(pg_db.engine, "base")
    async with pg_db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert names == {"gateway_alembic_version"}


async def test_pg_two_upgrades_in_one_process_take_turns(pg_db: PgDatabase) -> None:
    # Alembic's globals would let interleaved runs trample each other (this hung once).
    other = create_async_engine(pg_db.engine.url, poolclass=NullPool)
    try:
        await asyncio.wait_for(asyncio.gather(upgrade(pg_db.engine), upgrade(other)), 60)
    finally:
        await other.dispose()
    assert await _gateway_version(pg_db) == [HEAD]


_REPLICA = """
import asyncio, sys
from sqlalchemy.ext.asyncio import create_async_engine
from gateway.db.migrate import upgrade

async def main():
    engine = create_async_engine(sys.argv[1])
    await upgrade(engine)
    await engine.dispose()

asyncio.run(main())
"""


async def test_pg_replicas_upgrading_at_once_do_not_collide(pg_db: PgDatabase) -> None:
    # The advisory lock in env.py makes the second replica wait, then find nothing to do.
    url = pg_db.engine.url.render_as_string(hide_password=False)
    replicas = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _REPLICA, url, cwd=REPO, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in replicas)), 120)
    for proc, (_, stderr) in zip(replicas, results, strict=True):
        assert proc.returncode == 0, stderr.decode()
    assert await _gateway_version(pg_db) == [HEAD]
    assert len(await pg_db.fetch("SELECT 1 FROM gateway_schema_changes")) == 3
