"""The async engine, sessions, and the locks that keep several replicas from racing."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import tzinfo
from typing import Any

from sqlalchemy import event, inspect, select, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from gateway.db.models import OPTIONAL_TABLES, AppSettings
from gateway.db.resilience import DatabaseHealth, TrackedSession, mark_side_effect
from gateway.timeutil import zone

SETTINGS_TTL = 30.0
_holds_sqlite_writer: ContextVar[bool] = ContextVar("holds_sqlite_writer", default=False)
POOL_SIZE = 20  # steady connections for requests, beside those sized for jobs
DEFAULT_TIMEOUT = 5.0  # seconds: connect, wait for a pooled connection, run one statement


def lock_key(*parts: object) -> int:
    """A stable signed 64-bit key for pg_advisory_* from any parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Database:
    """One per app. PostgreSQL in production, SQLite for standalone use and tests."""

    def __init__(
        self,
        url: str,
        *,
        env_tz: str | None = None,
        echo: bool = False,
        job_concurrency: int = 10,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.is_postgres = url.startswith("postgresql")
        self.dialect = "postgresql" if self.is_postgres else "sqlite"
        self.timeout = timeout
        # hide_parameters: a database error's text (which may reach a log or a card's
        # last_error) never carries the statement's values.
        kwargs: dict[str, object] = {"echo": echo, "hide_parameters": True}
        # A scheduled job works on `job_concurrency` integrations at once, each in its own
        # session: the pool holds that many beside the steady ones that requests use, so the
        # bound can be used without starving requests (or the job waiting on the pool).
        self.pool_size = POOL_SIZE + max(job_concurrency, 1)
        if self.is_postgres:
            # No pre-ping (a round trip per checkout): a connection found dead fails its
            # statement, SQLAlchemy then invalidates the whole pool, and the web layer retries
            # the request once if it left no trace (gateway.db.resilience). Every wait is
            # bounded, so a hung or black-holed server costs a request seconds, not minutes.
            kwargs.update(
                pool_size=self.pool_size,
                max_overflow=10,
                pool_recycle=1800,
                pool_timeout=timeout,
                connect_args={
                    "timeout": timeout,  # TCP connect and start-up
                    "command_timeout": timeout + 1,  # client side: the server may not answer
                    # Server side, so PostgreSQL itself abandons a statement nobody waits for.
                    "server_settings": {"statement_timeout": str(int(timeout * 1000))},
                },
            )
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.health = DatabaseHealth()
        sync_engine = self.engine.sync_engine
        if not self.is_postgres:
            event.listen(sync_engine, "connect", _sqlite_pragmas)
        else:
            event.listen(sync_engine, "invalidate", _abort_invalidated)
        event.listen(sync_engine, "connect", lambda *_: self.health.succeeded())
        event.listen(sync_engine, "after_cursor_execute", lambda *_: self.health.succeeded())
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, class_=TrackedSession
        )
        self.env_tz = env_tz
        self.optional_tables: frozenset[str] = frozenset()
        # SQLite has no advisory locks; a standalone gateway is one process, so these serve.
        self._local_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._sqlite_writer_lock = asyncio.Lock()
        self._settings_refresh = asyncio.Lock()
        self._settings_cache: tuple[float, tuple[tzinfo, int]] | None = None
        # driver_connection() users wait for one of the pool's steady connections instead of
        # making the pool open overflow connections, which it closes again on return: under a
        # burst, that churn (a new PostgreSQL session per request) dominated the latency.
        self._driver_slots = asyncio.Semaphore(POOL_SIZE)

    def insert(self, table: Any) -> Any:
        """This dialect's INSERT construct, which has `on_conflict_do_nothing/update`."""
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        return dialect_insert(table)

    async def inspect_optional_tables(self) -> None:
        def _present(sync_conn) -> frozenset[str]:  # type: ignore[no-untyped-def]
            names = set(inspect(sync_conn).get_table_names())
            return frozenset(t for t in OPTIONAL_TABLES if t in names)

        async with self.engine.connect() as conn:
            self.optional_tables = await conn.run_sync(_present)

    def maintenance_engine(self) -> AsyncEngine:
        """An engine without the request timeouts, for migrations (DDL may take long).

        SQLite has none of those timeouts: there it is the app's own engine.
        """
        return create_async_engine(self.url) if self.is_postgres else self.engine

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def xact_lock(self, session: AsyncSession, *parts: object) -> AsyncIterator[None]:
        """Serialise a transaction on a key, across processes on PostgreSQL.

        The caller commits inside the block; on PostgreSQL the lock ends with the transaction.
        """
        if self.is_postgres:
            key = lock_key(*parts)
            await session.execute(select(text("pg_advisory_xact_lock(:k)")).params(k=key))
            yield
        else:
            async with self.sqlite_writer():
                yield

    @asynccontextmanager
    async def reads(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads only, in autocommit (a hot path's reads).

        Each statement is its own transaction: no BEGIN and no ROLLBACK round trips, and no
        snapshot shared between two statements. Never write on it.
        """
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def single_write(self) -> AsyncIterator[AsyncConnection]:
        """An autocommit connection for writes of one statement each (their own transaction).

        On SQLite under the process-wide writer lock, as write_transaction() is.
        """
        mark_side_effect()  # autocommit: a request that used it is never re-run
        async with self.sqlite_writer(), self.reads() as conn:
            yield conn

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[AsyncSession]:
        """A session for a transaction that writes; the caller commits.

        On SQLite the process-wide writer lock is held from before the first statement
        through the end of the block, so two writers never stall each other on SQLite's file
        lock; on PostgreSQL it is a plain session (row and advisory locks do the rest).
        """
        async with self.sqlite_writer(), self.sessions() as session:
            yield session

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """write_transaction() for Core statements: a connection in a transaction, committed
        when the block ends (rolled back on an error), without an ORM session around it.

        On SQLite the process-wide writer lock is held through the commit, as there.
        """
        mark_side_effect()
        async with self.sqlite_writer(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def sqlite_writer(self) -> AsyncIterator[None]:
        """On SQLite, one locked writer at a time in this process (a no-op on PostgreSQL).

        SQLite has one write lock for the whole file, so finer keys buy nothing there and two
        of them can deadlock against it (a transaction that wrote first waits for a key held
        by one that waits for the write lock). Re-entrant within a task, so a transaction that
        holds it from its first statement may call code that takes `xact_lock` again.
        """
        if self.is_postgres or _holds_sqlite_writer.get():
            yield
            return
        async with self._sqlite_writer_lock:
            token = _holds_sqlite_writer.set(True)
            try:
                yield
            finally:
                _holds_sqlite_writer.reset(token)

    @asynccontextmanager
    async def driver_connection(self) -> AsyncIterator[Any]:
        """The pool's own asyncpg connection (PostgreSQL only), for hot paths in autocommit.

        No SQLAlchemy execution layer and no BEGIN/COMMIT: each statement sent on it is its
        own transaction. Never start a transaction on it without ending it. After an error
        that may leave it in an unknown state (cancelled mid-statement, a driver or network
        error, still in a transaction) it is closed rather than returned to the pool.
        """
        if not self.is_postgres:
            raise RuntimeError("driver_connection() is for PostgreSQL")
        mark_side_effect()  # autocommit statements: a request that used it is never re-run
        async with self._driver_slots:
            fairy = await self.engine.raw_connection()
            conn = fairy.driver_connection
            try:
                yield conn
            except BaseException as exc:
                if _connection_unusable(conn, exc):
                    if conn.is_closed():
                        # Dead, not just dirty: the others from before are likely dead too
                        # (a restart). Invalidate the pool as SQLAlchemy does on a disconnect.
                        self.engine.pool._invalidate(fairy, exc, _checkin=False)
                    await greenlet_spawn(fairy.invalidate)
                else:  # e.g. a 401 raised by the caller: the connection itself is fine
                    await greenlet_spawn(fairy.close)
                raise
            else:
                # In a greenlet: returning an overflow connection closes it, which awaits.
                await greenlet_spawn(fairy.close)

    @asynccontextmanager
    async def exclusive(self, *parts: object, wait: float = 30.0) -> AsyncIterator[None]:
        """One holder at a time for a key, across replicas, holding no write lock.

        For work that waits on a provider (a token refresh): on PostgreSQL an advisory lock in
        a transaction of its own that writes nothing (so other writers are never held up; the
        wait for the lock may exceed GATEWAY_DB_TIMEOUT, up to `wait`); on SQLite, one
        process, an in-process lock, so SQLite's single writer lock stays free meanwhile.
        """
        key = lock_key(*parts)
        if self.is_postgres:
            async with self.engine.connect() as conn:
                await conn.execute(text(f"SET LOCAL statement_timeout = {int(wait * 1000)}"))
                await conn.execute(select(text("pg_advisory_xact_lock(:k)")).params(k=key))
                try:
                    yield
                finally:
                    await conn.rollback()  # ends the transaction, and the lock with it
        else:
            async with self._local_locks[key]:
                yield

    @asynccontextmanager
    async def try_session_lock(self, *parts: object) -> AsyncIterator[bool]:
        """Hold a lock for a long job if free; yields False when another holder has it."""
        key = lock_key(*parts)
        if self.is_postgres:
            async with self.engine.connect() as conn:
                got = (
                    await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                ).scalar()
                await conn.commit()
                try:
                    yield bool(got)
                finally:
                    if got:
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await conn.commit()
        else:
            lock = self._local_locks[key]
            if lock.locked():
                yield False
                return
            async with lock:
                yield True

    async def app_settings(self, session: AsyncSession | None = None) -> tuple[tzinfo, int]:
        """(app timezone, rounding minutes): settings row, else env TZ, else UTC.

        Kept for SETTINGS_TTL seconds: it is read on every timer and task write, and an admin's
        change of the app time zone may take that long to reach the gateway. Without a
        session, one is opened only when the cached value has expired.
        """
        cached = self._fresh_settings()
        if cached is not None:
            return cached
        if session is not None:  # the caller's connection: read there, wait for nobody
            return await self._read_settings(session)
        # One refresh at a time among callers without a session: when the value expires under
        # load they wait for it instead of each taking a connection to read the same row.
        # (Callers holding a connection never wait on this lock, so it cannot deadlock the pool.)
        async with self._settings_refresh:
            cached = self._fresh_settings()
            if cached is not None:
                return cached
            async with self.sessions() as own:
                return await self._read_settings(own)

    def _fresh_settings(self) -> tuple[tzinfo, int] | None:
        cache = self._settings_cache
        if cache is not None and time.monotonic() - cache[0] < SETTINGS_TTL:
            return cache[1]
        return None

    async def _read_settings(self, session: AsyncSession) -> tuple[tzinfo, int]:
        now = time.monotonic()
        row = (await session.execute(select(AppSettings).limit(1))).scalar_one_or_none()
        env_zone = zone(self.env_tz)
        if row is None:
            value: tuple[tzinfo, int] = (env_zone, 1)
        else:
            value = (zone(row.timezone, env_zone), max(int(row.rounding_minutes or 1), 1))
        self._settings_cache = (now, value)
        return value


def _connection_unusable(conn: Any, exc: BaseException) -> bool:
    """Whether an asyncpg connection must not go back to the pool after `exc`."""
    import asyncpg  # only on PostgreSQL

    if not isinstance(exc, Exception):  # cancelled, possibly in the middle of a statement
        return True
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    return conn.is_closed() or conn.is_in_transaction()


def _abort_invalidated(dbapi_conn, _record, _exc) -> None:  # type: ignore[no-untyped-def]
    """Drop an invalidated asyncpg connection at once.

    SQLAlchemy closes it politely and waits up to a fixed 2 s for the server to acknowledge,
    which a hung server never does: every request that met it would pay those 2 s on top of
    its timeout. An invalidated connection is unusable anyway; closing the socket is enough.
    """
    driver = getattr(dbapi_conn, "driver_connection", None)
    if driver is not None and not driver.is_closed():
        driver.terminate()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
