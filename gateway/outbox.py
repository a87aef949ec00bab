"""Timer events from every source, exactly once per subscriber: a transactional outbox.

Rows of `gateway_timer_events` are written in the same transaction as the timer change: by a
trigger on `time_entries` on PostgreSQL (so TimeTracker's own UI counts too, migration 158), by
the gateway's timer service on SQLite. A dispatcher wakes on LISTEN/NOTIFY (or polls), claims
due events with FOR UPDATE SKIP LOCKED under a lease, so replicas never hand one event out
twice and a killed replica's events are taken over when the lease ends, then runs each durable
subscriber that has not handled the event yet, retrying failures with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.database import Database
from gateway.db.models import TimerEventRow
from gateway.timeutil import Clock, utcnow

log = logging.getLogger(__name__)

CHANNEL = "gateway_timer_events"  # pg_notify channel of migration 158's trigger
STARTED, STOPPED = "started", "stopped"
# One event per claim, each subscriber under a time limit: the lease always outlasts the work
# it covers, so a dispatcher never finishes an event another one has taken over since.
BATCH = 1
SUBSCRIBER_TIMEOUT = 30.0  # seconds; Slack's Retry-After waits are capped below this
LEASE = timedelta(seconds=120)  # the default; GATEWAY_EVENT_LEASE (MIN_LEASE and up)
MIN_LEASE = timedelta(seconds=10)
POLL_SECONDS = 5.0  # the fallback when no notification arrives (or on SQLite)
MAX_ATTEMPTS = 8
MAX_ASKED_WAIT = 3600.0  # seconds: the longest Retry-After a subscriber's retry honours
DONE_RETENTION = timedelta(days=1)
PENDING_RETENTION = timedelta(days=7)


class PermanentFailure(Exception):
    """A subscriber failure that retrying cannot fix (e.g. Slack's channel_not_found)."""


class RetryLater(Exception):
    """A subscriber failure the provider asked to retry no sooner than `seconds` from now
    (e.g. Slack's 429 with Retry-After)."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = max(float(seconds), 0.0)


@dataclass(frozen=True)
class TimerEventRecord:
    """What a durable subscriber gets: which entry started or stopped, and when."""

    id: int
    kind: str  # started, stopped
    entry_id: int
    user_id: int
    created_at: datetime  # naive UTC
    attempts: int
    lease: datetime | None = None  # this dispatcher's lease, the token its finish must match


Subscriber = Callable[[TimerEventRecord], Awaitable[None]]


def backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s … capped at 10 minutes."""
    return timedelta(seconds=min(5 * 2 ** max(attempts - 1, 0), 600))


class TimerOutbox:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = utcnow,
        max_age: timedelta = timedelta(hours=1),
        poll_seconds: float = POLL_SECONDS,
        lease: timedelta = LEASE,
    ) -> None:
        if lease < MIN_LEASE:
            raise ValueError(f"a lease under {MIN_LEASE.total_seconds():g} s")
        self.db = db
        self.lease = lease
        # The lease must outlast the work it covers: each subscriber gets at most half of it.
        self.subscriber_timeout = min(SUBSCRIBER_TIMEOUT, lease.total_seconds() / 2)
        self.clock = clock
        self.max_age = max_age
        self.poll_seconds = poll_seconds
        self.subscribers: dict[str, Subscriber] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: object | None = None
        self._listen_failed: bool | None = None

    def subscribe(self, name: str, subscriber: Subscriber) -> None:
        if name in self.subscribers or "\n" in name:
            raise ValueError(f"subscriber {name!r} registered twice or badly named")
        self.subscribers[name] = subscriber

    # -- writing ----------------------------------------------------------------------------

    async def record(self, session: AsyncSession, kind: str, entry_id: int, user_id: int) -> None:
        """Add an event in the caller's transaction (the timer service's own writes).

        On PostgreSQL the trigger of migration 158 has already written it in the same
        transaction, whatever wrote the entry; writing it again here would announce it twice.
        """
        if self.db.is_postgres:
            return
        now = _naive_utc(self.clock())
        session.add(
            TimerEventRow(
                kind=kind,
                entry_id=entry_id,
                user_id=user_id,
                created_at=now,
                available_at=now,
                attempts=0,
            )
        )

    def wake(self) -> None:
        self._wake.set()

    # -- dispatching ------------------------------------------------------------------------

    async def claim(self, limit: int = BATCH) -> list[tuple[TimerEventRecord, set[str]]]:
        """Lease up to `limit` due events to this dispatcher; none that another holds."""
        now = _naive_utc(self.clock())
        async with self.db.write_transaction() as session:
            rows = (
                await session.execute(
                    select(TimerEventRow)
                    .where(
                        TimerEventRow.done_at.is_(None),
                        TimerEventRow.available_at <= now,
                        or_(TimerEventRow.locked_until.is_(None), TimerEventRow.locked_until < now),
                    )
                    .order_by(TimerEventRow.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars().all()
            claimed = []
            for row in rows:
                row.locked_until = now + self.lease
                row.attempts = (row.attempts or 0) + 1
                done = set(filter(None, (row.done_subscribers or "").split("\n")))
                claimed.append(
                    (
                        TimerEventRecord(
                            row.id, row.kind, row.entry_id, row.user_id, row.created_at,
                            row.attempts, row.locked_until,
                        ),
                        done,
                    )
                )
            await session.commit()
        return claimed

    async def dispatch_once(self) -> int:
        """Claim and handle one batch; the number of events handled."""
        claimed = await self.claim()
        for record, done in claimed:
            await self._dispatch(record, done)
        return len(claimed)

    async def dispatch_due(self) -> int:
        """Handle every event that is due now; how many."""
        handled = 0
        while count := await self.dispatch_once():
            handled += count
        return handled

    async def _dispatch(self, record: TimerEventRecord, done: set[str]) -> None:
        now = _naive_utc(self.clock())
        too_old = now - record.created_at > self.max_age
        errors: list[str] = []
        retry = False
        not_before = 0.0  # seconds a provider asked us to wait
        if too_old:
            errors.append("older than the age limit: not announced")
            log.info("timer event %s skipped: older than the age limit", record.id)
        else:
            for name, subscriber in self.subscribers.items():
                if name in done:
                    continue
                try:
                    async with asyncio.timeout(self.subscriber_timeout):
                        await subscriber(record)
                except asyncio.CancelledError:
                    raise
                except PermanentFailure as exc:
                    done.add(name)  # given up: recorded on the integration by the subscriber
                    errors.append(f"{name}: {exc}")
                except RetryLater as exc:
                    retry = True
                    not_before = max(not_before, exc.seconds)
                    errors.append(f"{name}: {exc} (retry after {int(exc.seconds)} s)")
                    log.warning("timer event %s: subscriber %s failed: %s", record.id, name, exc)
                except Exception as exc:
                    retry = True
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    log.warning("timer event %s: subscriber %s failed: %s", record.id, name, exc)
                else:
                    done.add(name)
        finished = not retry or record.attempts >= MAX_ATTEMPTS
        values: dict[str, object] = {
            "done_subscribers": "\n".join(sorted(done)) or None,
            "last_error": "; ".join(errors)[:500] or None,
            "locked_until": None,
        }
        if finished:
            values["done_at"] = now
        else:
            # Never sooner than the provider asked (capped: an absurd Retry-After is not obeyed).
            asked = timedelta(seconds=min(not_before, MAX_ASKED_WAIT))
            wait = max(backoff(record.attempts), asked)
            values["available_at"] = now + wait
        async with self.db.write_transaction() as session:
            # Only while the lease is still ours: had it run out and another dispatcher taken
            # the event, its result stands and this one is dropped.
            result = await session.execute(
                update(TimerEventRow)
                .where(TimerEventRow.id == record.id, TimerEventRow.locked_until == record.lease)
                .values(**values)
            )
            await session.commit()
        if not result.rowcount:
            log.warning("timer event %s: lease lost; another dispatcher's result stands", record.id)

    async def prune(self) -> int:
        now = _naive_utc(self.clock())
        async with self.db.write_transaction() as session:
            result = await session.execute(
                delete(TimerEventRow).where(
                    or_(
                        TimerEventRow.done_at < now - DONE_RETENTION,
                        TimerEventRow.created_at < now - PENDING_RETENTION,
                    )
                )
            )
            await session.commit()
        return int(result.rowcount or 0)

    # -- the loop ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.db.is_postgres:
            await self._listen()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="timer-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._unlisten()

    async def _run(self) -> None:
        while True:
            try:
                if self.db.is_postgres:
                    await self._keep_listening()
                await self.dispatch_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again at the next wake-up
                log.warning("timer events: dispatch failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()

    async def _listen(self) -> None:
        """A dedicated connection LISTENing to the trigger's notifications.

        Built from the whole database URL (its query options such as ssl= included). When it
        drops (a database restart), the loop notices and listens again; meanwhile polling
        still delivers, only later.
        """
        try:
            import asyncpg
            from sqlalchemy.engine import make_url

            dsn = make_url(self.db.url).set(drivername="postgresql")
            conn = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=5)
            await conn.add_listener(CHANNEL, lambda *_args: self._wake.set())
            conn.add_termination_listener(lambda *_args: self._wake.set())
            self._listener = conn
            if self._listen_failed is not False:
                log.info("timer events: listening for notifications")
            self._listen_failed = False
        except Exception as exc:
            self._listener = None
            if not self._listen_failed:  # once per change of state, not every poll
                log.warning("timer events: LISTEN unavailable (%s); polling", type(exc).__name__)
            self._listen_failed = True

    async def _keep_listening(self) -> None:
        conn = self._listener
        if conn is not None and not conn.is_closed():  # type: ignore[attr-defined]
            return
        if conn is not None:
            log.warning("timer events: the LISTEN connection closed; listening again")
        await self._listen()

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)  # type: ignore[attr-defined]


def _naive_utc(moment: datetime) -> datetime:
    """The gateway's own timestamps are naive UTC, like integrations.*_at."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)

__all__ = [
    "CHANNEL",
    "PermanentFailure",
    "RetryLater",
    "Subscriber",
    "TimerEventRecord",
    "TimerOutbox",
]
