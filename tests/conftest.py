"""Shared fixtures: a migrated database (SQLite, or PostgreSQL via TEST_DATABASE_URL) and the app."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gateway import keys
from gateway.app import create_app
from gateway.auth.passwords import hash_password
from gateway.db.migrate import upgrade
from gateway.db.models import (
    ApiToken,
    AppSettings,
    CalendarLink,
    Client,
    ConnectorState,
    Integration,
    JobSlot,
    Project,
    Task,
    TimeEntry,
    TimerEventRow,
    User,
    WebhookDelivery,
)
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[1]
# Copies of the published payloads and vectors (tests/fixtures/README.md: sources, licences).
FIXTURES = REPO / "tests" / "fixtures"
PG_URL = os.environ.get("TEST_DATABASE_URL", "")
ON_POSTGRES = PG_URL.startswith("postgresql")
PASSWORD = "correct horse battery"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgres` test what only PostgreSQL has (cross-connection races, the
    trigger, PL/pgSQL): CI's PostgreSQL pass runs them, the SQLite pass says it skipped them."""
    if ON_POSTGRES:
        return
    skip = pytest.mark.skip(reason="PostgreSQL only: set TEST_DATABASE_URL=postgresql+asyncpg://…")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


async def _create_pg_database(name: str) -> str:
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(name: str) -> None:
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


async def fresh_database_url(tmp: Path) -> tuple[str, str | None]:
    """(url, pg database name or None) of a new empty database."""
    if ON_POSTGRES:
        name = f"gw_test_{uuid.uuid4().hex[:12]}"
        return await _create_pg_database(name), name
    return f"sqlite+aiosqlite:///{tmp / f'gw-{uuid.uuid4().hex[:8]}.db'}", None


@pytest.fixture(scope="session")
def migrated_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per test session; tests empty its tables before they run."""

    async def make() -> tuple[str, str | None]:
        url, name = await fresh_database_url(tmp_path_factory.mktemp("db"))
        engine = create_async_engine(url)
        await upgrade(engine)
        if name and os.environ.get("TEST_CONFIG_AS_JSON"):
            # As in a real TimeTracker database: integrations.config is `json` there (the
            # gateway's own baseline makes it jsonb), which has no `=` operator.
            async with engine.begin() as conn:
                await conn.exec_driver_sql(
                    "ALTER TABLE integrations ALTER COLUMN config TYPE json"
                )
        await engine.dispose()
        return url, name

    url, name = asyncio.run(make())
    yield url
    if name:
        asyncio.run(_drop_pg_database(name))


_TABLES_IN_DELETE_ORDER = [
    TimerEventRow,  # no foreign keys: left over, they would announce reused entry ids
    ConnectorState,
    WebhookDelivery,
    ConnectorState,
    TimerEventRow,
    JobSlot,
    CalendarLink,
    TimeEntry,
    Task,
    Integration,
    ApiToken,
    Project,
    Client,
    AppSettings,
    User,
]


@pytest.fixture
async def clean_db(migrated_url: str) -> str:
    engine = create_async_engine(migrated_url)
    async with engine.begin() as conn:
        for model in _TABLES_IN_DELETE_ORDER:
            await conn.execute(delete(model))
    await engine.dispose()
    return migrated_url


@pytest.fixture
def settings(clean_db: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=clean_db,
        public_url="http://127.0.0.1:8080",
        data_dir=tmp_path / "data",
        encryption_key=Fernet.generate_key().decode(),
        scheduler=False,
        auto_migrate=False,
        timetracker_secret_key="tt-flask-secret",
        tz="UTC",
    )


@pytest.fixture
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client, app) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(app)


@dataclass
class Made:
    """Factories for rows, bound to the app's database."""

    app: object

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.app[keys.DB]  # type: ignore[index]

    async def user(
        self,
        username: str = "alice",
        *,
        password: str | None = PASSWORD,
        role: str = "user",
        active: bool = True,
        timezone: str | None = None,
        full_name: str | None = None,
        github_username: str | None = None,
    ) -> User:
        async with self.db.sessions() as s:
            user = User(
                username=username,
                role=role,
                is_active=active,
                password_hash=hash_password(password) if password else None,
                timezone=timezone,
                full_name=full_name,
                github_username=github_username,
            )
            s.add(user)
            await s.commit()
            return user

    async def project(
        self,
        name: str = "Website",
        *,
        status: str = "active",
        billable: bool = True,
        client_id: int | None = None,
    ) -> Project:
        async with self.db.sessions() as s:
            project = Project(name=name, status=status, billable=billable, client_id=client_id)
            s.add(project)
            await s.commit()
            return project

    async def task(self, project: Project, creator: User, name: str = "Task") -> Task:
        now = datetime(2026, 1, 1)
        async with self.db.sessions() as s:
            task = Task(
                project_id=project.id,
                name=name,
                status="todo",
                priority="medium",
                created_by=creator.id,
                created_at=now,
                updated_at=now,
            )
            s.add(task)
            await s.commit()
            return task

    async def token(
        self,
        user: User,
        scopes: str | None = "*",
        *,
        active: bool = True,
        expires_at: datetime | None = None,
    ) -> str:
        token = "tt_" + secrets.token_hex(16)
        async with self.db.sessions() as s:
            s.add(
                ApiToken(
                    name="test",
                    token_hash=hashlib.sha256(token.encode()).hexdigest(),
                    token_prefix=token[:10],
                    user_id=user.id,
                    scopes=scopes,
                    is_active=active,
                    expires_at=expires_at,
                )
            )
            await s.commit()
        return token

    async def app_settings(self, timezone: str = "Europe/Rome", rounding_minutes: int = 1) -> None:
        async with self.db.sessions() as s:
            s.add(AppSettings(timezone=timezone, rounding_minutes=rounding_minutes))
            await s.commit()


@pytest.fixture
def made(app) -> Made:  # type: ignore[no-untyped-def]
    return Made(app)


CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


async def login(client: TestClient, username: str = "alice", password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token for later writes."""
    page = await client.get("/login")
    match = CSRF_RE.search(await page.text())
    assert match, "login form has a csrf_token field"
    response = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
        allow_redirects=False,
    )
    assert response.status == 302, await response.text()
    session = await client.get("/api/session")
    assert session.status == 200
    return (await session.json())["csrf_token"]


@pytest.fixture
async def fake_github(aiohttp_server) -> tuple:  # type: ignore[no-untyped-def]
    from tests.fakes import FakeGitHub

    fake = FakeGitHub()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")
