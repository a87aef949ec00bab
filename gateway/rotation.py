"""`rotate-keys`: re-encrypt every stored connector secret with the primary key."""

from __future__ import annotations

from sqlalchemy import select

from gateway.connectors.base import Config, IntegrationStore
from gateway.connectors.catalog import SECRET_KEYS
from gateway.crypto import SecretBox
from gateway.db.database import Database
from gateway.db.models import Integration


async def rotate_all(db: Database, secrets: SecretBox) -> tuple[int, int]:
    """(rows changed, values re-encrypted). Each row is rewritten under its row lock."""
    async with db.sessions() as session:
        ids = (
            await session.execute(
                select(Integration.id, Integration.provider).where(
                    Integration.provider.in_(SECRET_KEYS)
                )
            )
        ).all()
    rows = values = 0
    for integration_id, provider in ids:
        store = IntegrationStore(db, secrets, provider, provider, SECRET_KEYS[provider])
        # update() re-wraps legacy plaintext and old-key values before it writes.
        _, count = await store.update(integration_id, _rewrap)
        if count:
            rows += 1
            values += count
    return rows, values


async def _rewrap(_row: object, config: Config, _session: object) -> int:
    return config.rewrap_secrets()
