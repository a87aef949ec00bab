"""Database outages: tell them from bugs, log them once per change, retry what left no trace."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType

from aiohttp import TraceConfig
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("gateway.database")

# Seconds a client is told to wait (Retry-After) when the database cannot be reached.
RETRY_AFTER_SECONDS = 5

# SQLSTATE classes that mean "not now" rather than "wrong": 08 connection exception,
# 53 insufficient resources (e.g. too many connections), 57 operator intervention
# (57014 statement timeout, 57P01 admin shutdown, 57P03 cannot connect now).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite", "gateway.db")


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is down, unreachable, overloaded or too slow.

    Programming errors (a bad query, a constraint) are not outages and stay 500s.
    """
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, sa_exc.InterfaceError):
            return True
        if isinstance(exc, sa_exc.OperationalError):
            return _operational_is_outage(exc)
        return _sqlstate(exc.orig) in _UNAVAILABLE_SQLSTATE_CLASSES
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if _is_asyncpg_unavailable(exc):
        return True
    # The driver lets socket errors and its own timeouts through unwrapped when connecting:
    # count them only when they were raised inside the database stack, not by other I/O.
    if isinstance(exc, OSError | TimeoutError):
        return _raised_in(exc.__traceback__, _DRIVER_MODULES)
    return False


def is_stale_connection(exc: BaseException) -> bool:
    """A pooled connection turned out to be dead (the pool has been invalidated since)."""
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def _operational_is_outage(exc: sa_exc.OperationalError) -> bool:
    if "sqlite" not in type(exc.orig).__module__:
        return True
    # SQLite says OperationalError for a missing table too: only contention and I/O count.
    text = str(exc.orig).lower()
    return any(s in text for s in ("locked", "busy", "unable to open", "disk i/o"))


def _sqlstate(orig: object) -> str:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(code)[:2] if code else ""


def _is_asyncpg_unavailable(exc: BaseException) -> bool:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover (asyncpg is a dependency)
        return False
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", ""))[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


def _raised_in(tb: TracebackType | None, modules: tuple[str, ...]) -> bool:
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(name, str) and name.startswith(modules):
            return True
        tb = tb.tb_next
    return False


def describe(exc: BaseException) -> str:
    """One short line about an outage, without credentials (the URL is never in it)."""
    inner = getattr(exc, "orig", None) or exc
    text = " ".join(str(inner).split())[:160]
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


class DatabaseHealth:
    """Whether the database answered lately. Logs one line when it goes down, one when back.

    Requests report failures; any statement that completes (or a new connection) reports
    success, so the state flips back without a probe of its own.
    """

    def __init__(self, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.clock = clock
        self.down_since: float | None = None
        self.failures = 0

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = self.clock()
            log.error("database unavailable (%s): answering 503 until it is back", describe(exc))

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        outage, failures = self.clock() - self.down_since, self.failures
        self.down_since, self.failures = None, 0
        log.warning("database is back after %.1f s (%d request(s) answered 503)", outage, failures)


@dataclass
class RequestTrace:
    """What one request did that a retry would repeat: durable writes, outbound calls."""

    left_trace: bool = False
    retried: bool = False


_current: ContextVar[RequestTrace | None] = ContextVar("gateway_request_trace", default=None)


def begin_trace() -> tuple[RequestTrace, object]:
    trace = RequestTrace()
    return trace, _current.set(trace)


def end_trace(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def mark_side_effect() -> None:
    """Called before anything a retry must not repeat (a COMMIT, an autocommit statement, an
    outbound call); a no-op outside a request."""
    trace = _current.get()
    if trace is not None:
        trace.left_trace = True


class TrackedSession(AsyncSession):
    """An AsyncSession that records, for the request's retry rule, that it commits."""

    async def commit(self) -> None:
        mark_side_effect()  # from here on the outcome may be durable: never run it twice
        await super().commit()


def outbound_trace() -> TraceConfig:
    """An aiohttp client trace: an outbound call is a side effect a retry must not repeat."""
    config = TraceConfig()

    async def on_request_start(*_: object) -> None:
        mark_side_effect()

    config.on_request_start.append(on_request_start)
    return config
