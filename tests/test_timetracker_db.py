"""The gateway on a real TimeTracker database (v5.10 schema): migrate, sign in, timers, GitHub."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway import keys
from gateway.app import create_app
from gateway.connectors.github.core import sign
from gateway.db.migrate import upgrade
from gateway.settings import Settings
from gateway.users import create_user, first_run
from tests.conftest import login
from tests.fakes import payload
from tests.test_migrations import PgDatabase, pg_db  # noqa: F401  (the fixture)

PASSWORD = "a long enough password"


@pytest.fixture
async def tt_client(pg_db: PgDatabase, aiohttp_client, tmp_path: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    await pg_db.load_timetracker()
    url = pg_db.url.set(database=pg_db.name).render_as_string(hide_password=False)
    settings = Settings(
        database_url=url,
        data_dir=tmp_path / "data",
        encryption_key=Fernet.generate_key().decode(),
        scheduler=False,
        auto_migrate=False,
        tz="Europe/Rome",
    )
    app = create_app(settings)
    await upgrade(app[keys.DB].engine)
    return app, await aiohttp_client(app), pg_db


async def test_gateway_works_on_a_real_timetracker_database(tt_client) -> None:
    app, client, tt = tt_client
    db = app[keys.DB]
    # A TimeTracker database is not "standalone": no first-run admin is created there.
    assert await first_run(db) is None
    # TimeTracker's users table has NOT NULL columns the gateway does not know; the CLI's
    # user creation fills them with neutral values.
    alice = await create_user(db, "alice", PASSWORD, admin=True)
    [project] = await tt.fetch(
        "INSERT INTO public.projects (name, status, billable) VALUES ('Website', 'active', false) "
        "RETURNING id"
    )
    project_id = project["id"]

    csrf = await login(client, "alice", PASSWORD)
    headers = {"X-CSRF-Token": csrf}
    started = await client.post(
        "/api/timer/start", json={"project_id": project_id}, headers=headers
    )
    assert started.status == 201, await started.text()
    entry = (await started.json())["entry"]
    assert entry["source"] == "auto" and entry["billable"] is False
    again = await client.post("/api/timer/start", json={"project_id": project_id}, headers=headers)
    assert again.status == 409
    stopped = await client.post("/api/timer/stop", headers=headers)
    assert stopped.status == 200
    [row] = await tt.fetch(
        "SELECT user_id, end_time IS NOT NULL AS ended, duration_seconds, source FROM public.time_entries"
    )
    assert (row["user_id"], row["ended"], row["source"]) == (alice, True, "auto")
    today = await (await client.get("/api/timer/today")).json()
    assert today["summary"]["entries"] == 1

    # GitHub: configure through the API, then a signed delivery makes a task in TimeTracker's table.
    saved = await client.post(
        "/api/integrations/github/config",
        json={
            "repo_owner": "Codertocat",
            "repo_name": "Hello-World",
            "default_project_id": project_id,
            "auto_start_timer": True,
            "github_username": "Codertocat",
        },
        headers=headers,
    )
    assert saved.status == 200, await saved.text()
    secret = (await saved.json())["webhook_secret"]
    for name in ("issues.opened", "issues.assigned"):
        raw = json.dumps(payload(name)).encode()
        response = await client.post(
            "/api/integrations/github/webhook",
            data=raw,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign(secret, raw),
            },
        )
        assert response.status == 200, await response.text()
    body = await response.json()
    assert body["timer"] == "started"
    [task] = await tt.fetch(
        "SELECT status, priority, external_ref, assigned_to, created_by FROM public.tasks"
    )
    assert dict(task) == {
        "status": "todo",
        "priority": "high",
        "external_ref": "github_issue_1",
        "assigned_to": alice,
        "created_by": alice,
    }
    [running] = await tt.fetch(
        "SELECT count(*) AS n FROM public.time_entries WHERE end_time IS NULL AND task_id IS NOT NULL"
    )
    assert running["n"] == 1
    # TimeTracker's own version row is untouched.
    [version] = await tt.fetch("SELECT version_num FROM public.alembic_version")
    assert version["version_num"] == "171_merge_kanban_feature_heads"
