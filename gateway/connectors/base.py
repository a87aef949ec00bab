"""What every connector shares: its integration row, encrypted config, status, common routes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from aiohttp import web
from sqlalchemy import select

from gateway import keys
from gateway.auth.identity import Principal, principal_of, protected
from gateway.crypto import SecretBox
from gateway.db.database import Database
from gateway.db.models import Integration
from gateway.errors import BadRequest, NotConfigured
from gateway.timeutil import iso_utc, utcnow_naive
from gateway.web.jsonio import ok, read_json_object

log = logging.getLogger(__name__)

NOT_CONFIGURED: dict[str, Any] = {"ok": False, "error": NotConfigured.MESSAGE}
SYNC_STATUSES = ("success", "partial", "error", "pending")
LAST_ERROR_MAX = 2000


class Config:
    """A decrypting, encrypting view of `integrations.config` for one connector."""

    def __init__(self, raw: dict[str, Any] | None, secrets: SecretBox, secret_keys: Iterable[str]):
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
        shown = {k: v for k, v in defaults.items()}
        shown.update({k: v for k, v in self.raw.items() if k not in self.secret_keys})
        for key in sorted(self.secret_keys):
            shown[f"has_{key}"] = self.has(key)
        return shown


class IntegrationStore:
    """The (provider, user) integration row: race-free creation, locked read-modify-write."""

    def __init__(
        self, db: Database, secrets: SecretBox, provider: str, name: str, secret_keys: Iterable[str]
    ):
        self.db = db
        self.secrets = secrets
        self.provider = provider
        self.name = name
        self.secret_keys = frozenset(secret_keys)

    def config(self, row: Integration | None) -> Config:
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
        async with self.db.sessions() as session:
            async with self.db.xact_lock(session, "integration", self.provider, user_id):
                row = (await session.execute(self._query(user_id))).scalar_one_or_none()
                if row is None:
                    row = Integration(
                        name=self.name,
                        provider=self.provider,
                        user_id=user_id,
                        is_global=False,
                        is_active=False,
                        config={},
                    )
                    session.add(row)
                await session.commit()
            return row

    async def update(
        self, integration_id: int, mutate: Callable[[Integration, Config], Any]
    ) -> tuple[Integration, Any]:
        """Read-modify-write of config under a row lock, so a job and a save never clobber.

        `mutate(row, config)` changes config (and row columns) in place; its result is returned.
        """
        async with self.db.sessions() as session:
            async with self.db.xact_lock(session, "integration-row", integration_id):
                row = (
                    await session.execute(
                        select(Integration)
                        .where(Integration.id == integration_id)
                        .with_for_update()
                    )
                ).scalar_one_or_none()
                if row is None or row.provider != self.provider:
                    raise NotConfigured()
                config = self.config(row)
                result = mutate(row, config)
                config.rewrap_secrets()
                row.config = dict(config.raw)  # a new object, so the JSON change is flushed
                row.updated_at = utcnow_naive()
                await session.commit()
            return row, result

    async def record_sync(self, integration_id: int, status: str, error: str | None = None) -> None:
        if status not in SYNC_STATUSES:
            raise ValueError(status)

        def mutate(row: Integration, _config: Config) -> None:
            row.last_sync_at = utcnow_naive()
            row.last_sync_status = status
            row.last_error = error[:LAST_ERROR_MAX] if error else None

        await self.update(integration_id, mutate)


class Connector:
    """Base of the three connectors: identity, secrets, defaults and the common HTTP surface.

    Subclasses implement `save` and `test`, and may extend `status_extra`/`is_connected`.
    """

    slug: ClassVar[str]
    provider: ClassVar[str]
    name: ClassVar[str]
    secret_keys: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.settings = app[keys.SETTINGS]
        self.db = app[keys.DB]
        self.store = IntegrationStore(
            self.db, app[keys.SECRETS], self.provider, self.name, self.secret_keys
        )

    @property
    def http(self):  # type: ignore[no-untyped-def]
        return self.app[keys.HTTP]

    def is_connected(self, row: Integration, config: Config) -> bool:
        return bool(row.is_active)

    def status_extra(self, row: Integration | None, config: Config) -> dict[str, Any]:
        return {}

    async def status(self, principal: Principal) -> dict[str, Any]:
        row = await self.store.find(principal.user.id)
        config = self.store.config(row)
        body: dict[str, Any] = {
            "ok": True,
            "configured": row is not None,
            "is_active": bool(row and row.is_active),
            "connected": bool(row is not None and self.is_connected(row, config)),
        }
        body.update(config.public(self.defaults))
        body.update(
            last_sync_at=iso_utc(row.last_sync_at) if row else None,
            last_sync_status=row.last_sync_status if row else None,
            last_error=row.last_error if row else None,
        )
        body.update(self.status_extra(row, config))
        return body

    async def save(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def test(self, principal: Principal) -> dict[str, Any]:
        raise NotImplementedError

    def install_common_routes(self, app: web.Application) -> None:
        """GET status, POST config and POST test under /api/integrations/{slug}/."""
        base = f"/api/integrations/{self.slug}"

        @protected("read:integrations")
        async def status_handler(request: web.Request) -> web.Response:
            return web.json_response(await self.status(principal_of(request)))

        @protected("write:integrations")
        async def config_handler(request: web.Request) -> web.Response:
            body = await read_json_object(request)
            return web.json_response(await self.save(principal_of(request), body))

        @protected("write:integrations")
        async def test_handler(request: web.Request) -> web.Response:
            result = await self.test(principal_of(request))
            return web.json_response(result, status=200)

        app.router.add_get(f"{base}/status", status_handler, name=f"{self.slug}_status")
        app.router.add_post(f"{base}/config", config_handler, name=f"{self.slug}_config")
        app.router.add_post(f"{base}/test", test_handler, name=f"{self.slug}_test")


def bool_value(body: dict[str, Any], key: str, default: bool) -> bool:
    """JSON booleans, or the strings "true"/"false" (and on/off, 1/0) that forms send."""
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "on", "1", "yes"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "off", "0", "no", ""}:
        return False
    raise BadRequest(f"{key} must be true or false", field=key)


__all__ = [
    "NOT_CONFIGURED",
    "Config",
    "Connector",
    "IntegrationStore",
    "bool_value",
    "ok",
]
