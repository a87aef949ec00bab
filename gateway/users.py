"""Creating users and the first-run set-up of an empty standalone database."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.auth.passwords import hash_password
from gateway.db.database import Database
from gateway.db.models import Project, User
from gateway.timeutil import utcnow_naive

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,79}$")


class UserError(ValueError):
    pass


def _filler(column: Any) -> Any:
    """A neutral value for a NOT NULL column of TimeTracker's that has no default."""
    if column.name == "auth_provider":
        return "local"
    if isinstance(column.type, Boolean):
        return False
    if isinstance(column.type, Integer | Numeric):
        return 0
    if isinstance(column.type, String | Text):
        return ""
    return None


async def _users_table(conn: AsyncConnection) -> Table:
    def reflect(sync_conn):  # type: ignore[no-untyped-def]
        meta = MetaData()
        return Table("users", meta, autoload_with=sync_conn)

    return await conn.run_sync(reflect)


async def create_user(db: Database, username: str, password: str, *, admin: bool = False) -> int:
    """Insert a user; on a real TimeTracker database, its extra NOT NULL columns get defaults."""
    username = username.strip().lower()
    if not USERNAME_RE.match(username):
        raise UserError("username: 1-80 characters, lowercase letters, digits and . _ @ -")
    if len(password) < 8:
        raise UserError("password: at least 8 characters")
    async with db.engine.begin() as conn:
        table = await _users_table(conn)
        exists = (
            await conn.execute(
                select(func.count()).select_from(table).where(table.c.username == username)
            )
        ).scalar()
        if exists:
            raise UserError(f"user {username!r} already exists")
        now = utcnow_naive()
        values: dict[str, Any] = {
            "username": username,
            "role": "admin" if admin else "user",
            "is_active": True,
            "password_hash": hash_password(password),
            "created_at": now,
            "updated_at": now,
        }
        for column in table.columns:
            if (
                column.name not in values
                and not column.nullable
                and not column.primary_key
                and column.server_default is None
            ):
                values[column.name] = _filler(column)
        try:
            result = await conn.execute(insert(table).values(**values).returning(table.c.id))
        except IntegrityError:
            raise UserError(f"user {username!r} already exists") from None
        return int(result.scalar_one())


async def is_standalone(db: Database) -> bool:
    """A TimeTracker database has TimeTracker's own `alembic_version` table."""
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    return "alembic_version" not in names


async def first_run(db: Database) -> str | None:
    """On an empty standalone database: user 'admin' (random password, returned) and 'General'."""
    if not await is_standalone(db):
        return None
    async with db.sessions() as session:
        if (await session.execute(select(func.count()).select_from(User))).scalar():
            return None
    password = secrets.token_urlsafe(12)
    try:
        await create_user(db, "admin", password, admin=True)
    except UserError:
        return None  # another process won the race
    async with db.sessions() as session:
        has_general = (
            await session.execute(
                select(func.count()).select_from(Project).where(Project.name == "General")
            )
        ).scalar()
        if not has_general:
            session.add(Project(name="General", status="active", billable=True))
            await session.commit()
    return password
