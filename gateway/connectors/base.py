"""What every connector shares: its integration row, field-table config, status and facts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.connectors.fields import Field, FieldError, FieldTable, boolean
from gateway.connectors.http import HttpClient
from gateway.crypto import SecretBox
from gateway.db.database import Database
from gateway.db.models import ConnectorState, Integration, Project, User
from gateway.errors import BadRequest, NotConfigured
from gateway.settings import Settings
from gateway.timer.service import TimerService
from gateway.timeutil import Clock, iso_utc, utcnow_naive

log = logging.getLogger(__name__)

NOT_CONFIGURED: dict[str, Any] = {"ok": False, "error": NotConfigured.MESSAGE}
SYNC_STATUSES = ("success", "partial", "error", "pending")
LAST_ERROR_MAX = 2000
FACT_TEXT_MAX = 500

# Every connector can be switched off without losing its secrets (the card's on/off switch).
ENABLED = Field("enabled", boolean, default=True)


@dataclass(frozen=True)
class ConnectorDeps:
    """What a connector is built with; nothing is fetched from the app behind its back."""

    settings: Settings
    db: Database
    secrets: SecretBox
    http: HttpClient
    timer: TimerService
    clock: Clock


class Config:
    """A decrypting, encrypting view of `integrations.config` for one connector."""

    def __init__(self, raw: dict[str, Any] | None, secrets: SecretBox, secret_keys: Any):
        self.raw: dict[str, Any] = dict(raw or {})
        self._secrets = secrets
        self.secret_keys = frozenset(secret_keys)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.secret_keys:
            raise KeyError(f"{key} is a secret: use secret()")
        return self.raw.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if key in self.secret_keys:
            raise KeyError(f"{key} is a secret: use set_secret()")
        self.raw[key] = value

    def secret(self, key: str) -> str | None:
        return self._secrets.decrypt(self.raw.get(key))

    def has(self, key: str) -> bool:
        return bool(self.raw.get(key))

    def set_secret(self, key: str, plaintext: str | None) -> None:
        if key not in self.secret_keys:
            raise KeyError(f"{key} is not a secret key")
        if plaintext:
            self.raw[key] = self._secrets.encrypt(plaintext)
        else:
            self.raw.pop(key, None)

    def rewrap_secrets(self) -> int:
        """Re-encrypt legacy plaintext and old-key values with the primary key."""
        count = 0
        for key in self.secret_keys:
            value = self.raw.get(key)
            if isinstance(value, str) and self._secrets.needs_rewrap(value):
                self.raw[key] = self._secrets.rewrap(value)
                count += 1
        return count

    def public(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """Non-secret keys (with defaults) and one `has_<key>` boolean per secret."""
        shown = dict(defaults)
        shown.update({k: v for k, v in self.raw.items() if k not in self.secret_keys})
        for key in sorted(self.secret_keys):
            shown[f"has_{key}"] = self.has(key)
        return shown


Mutation = Callable[[Integration, Config, AsyncSession], Awaitable[Any]]


class IntegrationStore:
    """The (provider, user) integration row: race-free creation, locked read-modify-write."""

    def __init__(
        self, db: Database, secrets: SecretBox, provider: str, name: str, secret_keys: Any
    ):
        self.db = db
        self.secrets = secrets
        self.provider = provider
        self.name = name
        self.secret_keys = frozenset(secret_keys)

    def config(self, row: Any) -> Config:
        return Config(row.config if row is not None else None, self.secrets, self.secret_keys)

    def _query(self, user_id: int):  # type: ignore[no-untyped-def]
        # No unique key exists on (provider, user_id) in TimeTracker's table: the oldest row wins.
        return (
            select(Integration)
            .where(Integration.provider == self.provider, Integration.user_id == user_id)
            .order_by(Integration.id)
            .limit(1)
        )

    async def find(self, user_id: int) -> Integration | None:
        async with self.db.sessions() as session:
            return (await session.execute(self._query(user_id))).scalar_one_or_none()

    async def get(self, integration_id: int) -> Integration | None:
        async with self.db.sessions() as session:
            row = await session.get(Integration, integration_id)
            return row if row is not None and row.provider == self.provider else None

    async def require_active(self, user_id: int) -> Integration:
        row = await self.find(user_id)
        if row is None or not row.is_active:
            raise NotConfigured()
        return row

    async def active_rows(self) -> list[Integration]:
        async with self.db.sessions() as session:
            rows = await session.execute(
                select(Integration)
                .where(Integration.provider == self.provider, Integration.is_active.is_(True))
                .order_by(Integration.id)
            )
            return list(rows.scalars())

    async def get_or_create(self, user_id: int) -> Integration:
        """Race-free across replicas: creation is serialised on an advisory lock per key."""
        async with self.db.write_transaction() as session:
            row = await self._locked_row(session, user_id, create=True)
            await session.commit()
            return row

    async def _locked_row(
        self, session: AsyncSession, user_id: int, *, create: bool
    ) -> Integration | None:
        async with self.db.xact_lock(session, "integration", self.provider, user_id):
            row = (
                await session.execute(self._query(user_id).with_for_update())
            ).scalar_one_or_none()
            if row is None and create:
                now = utcnow_naive()
                row = Integration(
                    name=self.name,
                    provider=self.provider,
                    user_id=user_id,
                    is_global=False,
                    is_active=False,
                    config={},
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                await session.flush()
            return row

    async def change(self, user_id: int, mutate: Mutation, *, create: bool = True) -> Any:
        """Get-or-create the user's row and change it, in one transaction under its lock.

        `mutate(row, config, session)` changes config (and row columns) in place and may write
        other rows on the same session; its result is returned with the row. None as the row
        when there is none and `create` is false.
        """
        async with self.db.write_transaction() as session:
            row = await self._locked_row(session, user_id, create=create)
            if row is None:
                return None, None
            result = await self._apply(session, row, mutate)
            await session.commit()
            return row, result

    async def update(self, integration_id: int, mutate: Mutation) -> tuple[Integration, Any]:
        """Read-modify-write of one row by id under a row lock, so a job and a save never clobber."""
        async with self.db.write_transaction() as session:
            row = (
                await session.execute(
                    select(Integration).where(Integration.id == integration_id).with_for_update()
                )
            ).scalar_one_or_none()
            if row is None or row.provider != self.provider:
                raise NotConfigured()
            result = await self._apply(session, row, mutate)
            await session.commit()
            return row, result

    async def _apply(self, session: AsyncSession, row: Integration, mutate: Mutation) -> Any:
        config = self.config(row)
        result = await mutate(row, config, session)
        config.rewrap_secrets()
        row.config = dict(config.raw)  # a new object, so the JSON change is flushed
        row.updated_at = utcnow_naive()
        return result

    async def read(self, integration_id: int, conn: AsyncConnection | None = None) -> Any:
        """The row's columns by id (Core, no ORM object): for hot paths that only read.

        On `conn` if given (a caller reading more in one go), else on a connection of its own.
        """
        if conn is None:
            async with self.db.reads() as own:
                return await self.read(integration_id, own)
        row = (await conn.execute(_SELECT_INTEGRATION, {"id": integration_id})).first()
        return row if row is not None and row.provider == self.provider else None

    async def record_sync(
        self,
        integration_id: int,
        status: str,
        error: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        seen: dict[str, Any] | None = None,
    ) -> None:
        """A sync's outcome, and the plain config keys it sets, written atomically: a settings
        save or token refresh in between is never overwritten.

        `seen` is the config as the caller read it: while the stored config is still equal to
        it, the write is one compare-and-set statement; otherwise (or without it) the row is
        read under its lock and written in one transaction. Both write the same.
        """
        if status not in SYNC_STATUSES:
            raise ValueError(status)
        values = {
            "b_id": integration_id,
            "b_status": status,
            "b_error": error[:LAST_ERROR_MAX] if error else None,
        }
        if isinstance(seen, dict):
            merged = Config(seen, self.secrets, self.secret_keys)
            for key, value in (config or {}).items():
                merged.set(key, value)
            merged.rewrap_secrets()
            if self.db.is_postgres:  # on the pool's asyncpg connection: a job's hot path
                async with self.db.driver_connection() as raw:
                    answer = await raw.execute(
                        _PG_RECORD_SYNC_IF_UNCHANGED,
                        json.dumps(merged.raw),
                        utcnow_naive(),
                        status,
                        values["b_error"],
                        integration_id,
                        json.dumps(seen),
                    )
                if answer == "UPDATE 1":
                    return
            else:
                async with self.db.single_write() as conn:
                    done = await conn.execute(
                        _RECORD_SYNC_IF_UNCHANGED,
                        {**values, "b_config": merged.raw, "b_seen": seen, "b_now": utcnow_naive()},
                    )
                if done.rowcount == 1:
                    return
        async with self.db.write_transaction() as session:
            row = (
                await session.execute(_LOCK_INTEGRATION_CONFIG, {"id": integration_id})
            ).first()
            if row is None or row.provider != self.provider:
                raise NotConfigured()
            current = self.config(row)
            for key, value in (config or {}).items():
                current.set(key, value)
            current.rewrap_secrets()
            await session.execute(
                _RECORD_SYNC, {**values, "b_config": current.raw, "b_now": utcnow_naive()}
            )
            await session.commit()


_INTEGRATIONS = Integration.__table__
_SELECT_INTEGRATION = select(_INTEGRATIONS).where(_INTEGRATIONS.c.id == bindparam("id"))
_LOCK_INTEGRATION_CONFIG = (
    select(_INTEGRATIONS.c.provider, _INTEGRATIONS.c.config)
    .where(_INTEGRATIONS.c.id == bindparam("id"))
    .with_for_update()
)
_RECORD_SYNC = (
    update(_INTEGRATIONS)
    .where(_INTEGRATIONS.c.id == bindparam("b_id"))
    .values(
        config=bindparam("b_config", type_=_INTEGRATIONS.c.config.type),
        last_sync_at=bindparam("b_now"),
        last_sync_status=bindparam("b_status"),
        last_error=bindparam("b_error"),
        updated_at=bindparam("b_now"),
    )
)
# The same, only while the stored config is the one the caller read (jsonb equality on
# PostgreSQL; on SQLite the JSON text, which the gateway writes the same way each time: a
# row written differently fails the check and takes the locked path, never a wrong write).
_RECORD_SYNC_IF_UNCHANGED = _RECORD_SYNC.where(
    _INTEGRATIONS.c.config == bindparam("b_seen", type_=_INTEGRATIONS.c.config.type)
)
# The same on PostgreSQL's asyncpg connection. TimeTracker's own column is `json`, which has
# no equality operator: compared as jsonb (the gateway's own baseline makes it jsonb: both work).
_PG_RECORD_SYNC_IF_UNCHANGED = (
    "UPDATE integrations SET config = $1::jsonb, last_sync_at = $2, last_sync_status = $3, "
    "last_error = $4, updated_at = $2 WHERE id = $5 AND config::jsonb = $6::jsonb"
)


# -- connection facts ---------------------------------------------------------------------------

_UPSERT_EVENT = text(
    "INSERT INTO gateway_connector_state (integration_id, last_event_at, last_event_status, "
    "last_event_detail) VALUES (:id, :at, :status, :detail) "
    "ON CONFLICT (integration_id) DO UPDATE SET last_event_at = excluded.last_event_at, "
    "last_event_status = excluded.last_event_status, "
    "last_event_detail = excluded.last_event_detail"
)
_UPSERT_CHECK = text(
    "INSERT INTO gateway_connector_state (integration_id, connected_as, last_checked_at, "
    "last_check_status, last_check_error) VALUES (:id, :who, :at, :status, :error) "
    "ON CONFLICT (integration_id) DO UPDATE SET "
    "connected_as = COALESCE(excluded.connected_as, gateway_connector_state.connected_as), "
    "last_checked_at = excluded.last_checked_at, last_check_status = excluded.last_check_status, "
    "last_check_error = excluded.last_check_error"
)
# A success clears an error left by an earlier failure (the card stops saying "Needs attention").
_CLEAR_STALE_ERROR = (
    update(Integration)
    .where(Integration.last_error.is_not(None))
    .values(last_error=None)
    .execution_options(synchronize_session=False)
)
EVENT_FACT_INTERVAL = 2.0  # seconds between two writes of an unchanged event fact


class ConnectionFacts:
    """Last inbound event and last outbound check of each integration (DESIGN §10).

    Inbound events are frequent (every webhook delivery): an unchanged outcome is written at
    most every EVENT_FACT_INTERVAL seconds per integration by this process, so the fact costs
    the hot path almost nothing. It is informational: a lost throttled write is harmless.
    """

    def __init__(self, db: Database, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self._monotonic = monotonic
        self._written: dict[int, tuple[str, float]] = {}

    async def record_event(self, integration_id: int, status: str, detail: str | None = None):
        now = self._monotonic()
        last = self._written.get(integration_id)
        if last is not None and last[0] == status and now - last[1] < EVENT_FACT_INTERVAL:
            return
        if len(self._written) > 10_000:
            self._written.clear()
        self._written[integration_id] = (status, now)
        async with self.db.write_transaction() as session:
            await session.execute(
                _UPSERT_EVENT,
                {
                    "id": integration_id,
                    "at": utcnow_naive(),
                    "status": status[:20],
                    "detail": (detail or "")[:FACT_TEXT_MAX] or None,
                },
            )
            if status in {"processed", "ok", "success"}:
                await session.execute(_CLEAR_STALE_ERROR.where(Integration.id == integration_id))
            await session.commit()

    async def record_check(
        self, integration_id: int, ok: bool, connected_as: str | None, error: str | None
    ) -> None:
        async with self.db.write_transaction() as session:
            await session.execute(
                _UPSERT_CHECK,
                {
                    "id": integration_id,
                    "who": (connected_as or "")[:200] or None,
                    "at": utcnow_naive(),
                    "status": "ok" if ok else "error",
                    "error": (error or "")[:FACT_TEXT_MAX] or None,
                },
            )
            if ok:
                await session.execute(_CLEAR_STALE_ERROR.where(Integration.id == integration_id))
            await session.commit()

    async def forget_account(self, session: AsyncSession, integration_id: int) -> None:
        """On disconnect: the account seen by the last check is no longer connected."""
        await session.execute(
            update(ConnectorState)
            .where(ConnectorState.integration_id == integration_id)
            .values(connected_as=None)
        )

    async def read(self, integration_id: int | None) -> dict[str, Any]:
        state = None
        if integration_id is not None:
            async with self.db.sessions() as session:
                state = await session.get(ConnectorState, integration_id)
        return {
            "last_event_at": iso_utc(state.last_event_at) if state else None,
            "last_event_status": state.last_event_status if state else None,
            "connected_as": state.connected_as if state else None,
            "last_checked_at": iso_utc(state.last_checked_at) if state else None,
            "last_check_status": state.last_check_status if state else None,
            "last_check_error": state.last_check_error if state else None,
        }


# -- the connector ------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """What a connection test found: the account seen, or a plain error with a code."""

    ok: bool
    connected_as: str | None = None
    error: str | None = None
    code: str | None = None  # e.g. bad_token, network, rate_limited
    extra: dict[str, Any] = field(default_factory=dict)

    def answer(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "connected_as": self.connected_as, **self.extra}
        body: dict[str, Any] = {"ok": False, "error": self.error or "The check failed"}
        if self.code:
            body["code"] = self.code
        return {**body, **self.extra}


@dataclass
class SaveContext:
    """What a connector's save hooks see and may add to: the answer's extra keys."""

    user: User
    body: dict[str, Any]
    plain: dict[str, Any]
    secrets: dict[str, str]
    current: Config  # the stored config, before this save's values go in
    answer: dict[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        """The value a plain key will have after this save."""
        return self.plain[key] if key in self.plain else self.current.get(key)


class Connector:
    """Base of the connectors: identity, field table, save/status/test/disconnect.

    A connector declares `slug`, `provider`, `name` and `fields`, and implements
    `check_connection`; it may extend the hooks `validate`, `before_commit` and `status_extra`.
    """

    slug: ClassVar[str]
    provider: ClassVar[str]
    name: ClassVar[str]
    fields: ClassVar[FieldTable]

    def __init__(self, deps: ConnectorDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.db = deps.db
        self.http = deps.http
        self.timer = deps.timer
        self.clock = deps.clock
        self.table = FieldTable((*self.fields.fields, ENABLED))
        self.store = IntegrationStore(
            self.db, deps.secrets, self.provider, self.name, self.table.secret_keys
        )
        self.facts = ConnectionFacts(self.db)

    # -- status -------------------------------------------------------------------------------

    def is_connected(self, row: Integration, config: Config) -> bool:
        return bool(row.is_active)

    async def status_extra(
        self, user: User, row: Integration | None, config: Config
    ) -> dict[str, Any]:
        return {}

    async def status(self, user: User) -> dict[str, Any]:
        row = await self.store.find(user.id)
        config = self.store.config(row)
        body: dict[str, Any] = {
            "ok": True,
            "configured": row is not None,
            "is_active": bool(row and row.is_active),
            "connected": bool(row is not None and self.is_connected(row, config)),
        }
        body.update(config.public(self.table.defaults))
        body["missing"] = self.activation_missing(config)
        body.update(
            last_sync_at=iso_utc(row.last_sync_at) if row else None,
            last_sync_status=row.last_sync_status if row else None,
            last_error=row.last_error if row else None,
        )
        body.update(await self.facts.read(row.id if row else None))
        body.update(await self._project_names(config))
        body.update(await self.status_extra(user, row, config))
        return body

    async def _project_names(self, config: Config) -> dict[str, Any]:
        """`project_name` beside a project field, so a card shows a name rather than an id."""
        names: dict[str, Any] = {}
        for f in self.table.fields:
            project_id = config.get(f.name) if f.project else None
            if project_id is None:
                continue
            async with self.db.sessions() as session:
                project = await session.get(Project, project_id)
            key = "project_name" if f.name == "default_project_id" else f"{f.name}_name"
            names[key] = project.name if project else None
        return names

    # -- save ---------------------------------------------------------------------------------

    async def validate(self, ctx: SaveContext, session: AsyncSession) -> None:
        """Connector-specific checks and side writes, inside the save's transaction."""

    def before_commit(self, ctx: SaveContext, row: Integration, config: Config) -> None:
        """Last changes to the config once the body's values are in (e.g. generated secrets)."""

    def activation_missing(self, config: Config) -> list[str]:
        return self.table.missing(config.raw, config.has)

    async def save(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        """Validate the body against the field table and write it in one transaction."""
        try:
            plain, secrets = self.table.parse(body)
        except FieldError as exc:
            raise BadRequest(f"{exc.field}: {exc.message}", field=exc.field) from None

        async def mutate(row: Integration, config: Config, session: AsyncSession) -> SaveContext:
            ctx = SaveContext(user, body, plain, secrets, current=Config(row.config, self.store.secrets, self.table.secret_keys))
            for f in self.table.fields:
                if f.project and plain.get(f.name) is not None:
                    project = await self.timer.usable_project(
                        session, user, plain[f.name], field_name=f.name
                    )
                    plain[f.name] = project.id
            await self.validate(ctx, session)
            for key, value in ctx.plain.items():
                config.set(key, value)
            for key, value in ctx.secrets.items():
                config.set_secret(key, value)
            self.before_commit(ctx, row, config)
            missing = self.activation_missing(config)
            row.is_active = bool(config.get("enabled", True)) and not missing
            if missing:
                ctx.answer["missing"] = missing
            return ctx

        row, ctx = await self.store.change(user.id, mutate)
        log.info(
            "%s config saved for user %s (%s)",
            self.slug,
            user.id,
            ", ".join(sorted(ctx.plain) + [f"{k} (secret)" for k in sorted(ctx.secrets)])
            or "nothing changed",
        )
        return {"ok": True, "is_active": row.is_active, **ctx.answer}

    # -- test ---------------------------------------------------------------------------------

    async def check_connection(self, row: Integration, config: Config) -> CheckResult:
        raise NotImplementedError

    async def test(self, user: User) -> dict[str, Any]:
        row = await self.store.require_active(user.id)  # 409 if missing or inactive
        result = await self.check_connection(row, self.store.config(row))
        await self.facts.record_check(row.id, result.ok, result.connected_as, result.error)
        return result.answer()

    # -- disconnect ---------------------------------------------------------------------------

    async def revoke(self, row: Integration, config: Config) -> None:
        """Tell the provider before secrets are wiped (Google revokes its token)."""

    async def disconnect(self, user: User) -> dict[str, Any]:
        """Wipe secrets, deactivate, keep the other settings; idempotent (DESIGN §10)."""
        row = await self.store.find(user.id)
        if row is None:
            return {"ok": True}
        await self.revoke(row, self.store.config(row))

        async def mutate(r: Integration, config: Config, session: AsyncSession) -> None:
            for key in self.table.secret_keys:
                config.set_secret(key, None)
            self.on_disconnect(config)
            r.is_active = False
            await self.facts.forget_account(session, r.id)

        await self.store.change(user.id, mutate, create=False)
        log.info("%s disconnected for user %s", self.slug, user.id)
        return {"ok": True}

    def on_disconnect(self, config: Config) -> None:
        """Connector-specific keys to clear when secrets are wiped."""


__all__ = [
    "NOT_CONFIGURED",
    "CheckResult",
    "Config",
    "ConnectionFacts",
    "Connector",
    "ConnectorDeps",
    "IntegrationStore",
    "SaveContext",
]
