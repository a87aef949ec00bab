"""The connector kit: field table, webhook pipeline, job runner, facts, disconnect, outbox."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
import urllib.parse
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from gateway import keys
from gateway.app import create_app
from gateway.connectors import fields as f
from gateway.connectors.github import KEY as GITHUB
from gateway.connectors.github.core import sign
from gateway.connectors.jobs import IntegrationJobRunner, SyncOutcome
from gateway.db.models import Integration, Task, TimerEventRow, WebhookDelivery
from gateway.outbox import PermanentFailure, TimerOutbox
from tests.conftest import Made
from tests.fakes import payload
from tests.test_github import gh  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]


# -- field table ------------------------------------------------------------------------------


def test_field_table_parses_only_named_keys_and_keeps_blank_secrets() -> None:
    table = f.FieldTable(
        [
            f.Field("token", f.secret(), secret=True, required=True),
            f.Field("channel", f.text(20), required=True),
            f.Field("notify", f.boolean, default=True),
        ]
    )
    plain, secrets = table.parse({"token": "  ", "notify": "false"})
    assert plain == {"notify": False} and secrets == {}
    plain, secrets = table.parse({"token": " xoxb-1 ", "channel": " C1 "})
    assert plain == {"channel": "C1"} and secrets == {"token": "xoxb-1"}
    assert table.missing({"channel": None}, lambda key: False) == ["token", "channel"]
    assert table.missing({"channel": "C1"}, lambda key: key == "token") == []
    assert table.secret_keys == ("token",)
    assert table.defaults == {"channel": None, "notify": True}
    with pytest.raises(f.FieldError) as info:
        table.parse({"channel": "x" * 21})
    assert info.value.field == "channel"
    with pytest.raises(f.FieldError):
        table.parse({"token": "a" * (f.SECRET_MAX + 1)})


@pytest.mark.parametrize("value", ["²", "１２", "-1", "0", "2147483648", True, 1.5, "abc"])
def test_ids_are_ascii_digits_in_range(value: object) -> None:
    with pytest.raises(ValueError):
        f.optional_id(value)


async def test_save_names_what_is_missing_and_when_a_secret_is_made(client, made) -> None:
    owner = await made.user("carol")
    token = await made.token(owner)
    auth = {"Authorization": f"Bearer {token}"}
    answer = await client.post(
        "/api/integrations/github/config", json={"repository": "octo/hello"}, headers=auth
    )
    body = await answer.json()
    assert answer.status == 200, body
    assert body["is_active"] is False
    assert body["missing"] == ["default_project_id"]
    first_secret = body["webhook_secret"]  # DESIGN §10: the first save makes one, shown once
    status = await (await client.get("/api/integrations/github/status", headers=auth)).json()
    assert (status["repo_owner"], status["repo_name"]) == ("octo", "hello")
    assert status["has_webhook_secret"] is True and status["missing"] == ["default_project_id"]

    project = await made.project("General")
    answer = await client.post(
        "/api/integrations/github/config", json={"default_project_id": project.id}, headers=auth
    )
    body = await answer.json()
    assert body["is_active"] is True and "missing" not in body
    assert "webhook_secret" not in body and len(first_secret) >= 32

    # After a disconnect an unrelated edit does not reconnect; completing the form again does.
    await client.post("/api/integrations/github/disconnect", headers=auth)
    answer = await client.post(
        "/api/integrations/github/config", json={"label_filter": "bug"}, headers=auth
    )
    body = await answer.json()
    assert body["is_active"] is False and "webhook_secret" not in body
    assert body["missing"] == ["webhook_secret"]
    answer = await client.post(
        "/api/integrations/github/config", json={"generate_webhook_secret": True}, headers=auth
    )
    body = await answer.json()
    assert body["is_active"] is True and body["webhook_secret"] != first_secret


async def test_a_secret_of_100_kb_is_refused_and_nothing_is_written(client, made) -> None:
    owner = await made.user("dave")
    auth = {"Authorization": f"Bearer {await made.token(owner)}"}
    answer = await client.post(
        "/api/integrations/github/config", json={"github_token": "g" * 100_000}, headers=auth
    )
    assert answer.status == 400
    assert (await answer.json())["field"] == "github_token"
    async with client.app[keys.DB].sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Integration))).scalar() == 0


async def test_the_repository_field_explains_its_format(client, made) -> None:
    owner = await made.user("erin")
    auth = {"Authorization": f"Bearer {await made.token(owner)}"}
    answer = await client.post(
        "/api/integrations/github/config", json={"repository": "just-a-name"}, headers=auth
    )
    body = await answer.json()
    assert answer.status == 400 and body["field"] == "repository"
    assert "owner/repo" in body["error"]


# -- disconnect and facts ---------------------------------------------------------------------


async def test_disconnect_wipes_secrets_keeps_settings_and_is_idempotent(gh) -> None:  # noqa: F811
    for _ in range(2):
        answer = await gh.client.post("/api/integrations/github/disconnect", headers=gh.auth)
        assert answer.status == 200 and await answer.json() == {"ok": True}
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["is_active"] is False and status["connected"] is False
    assert status["has_webhook_secret"] is False and status["has_github_token"] is False
    assert status["repo_owner"] == "Codertocat" and status["default_project_id"] == gh.project.id
    async with gh.app[keys.DB].sessions() as s:
        config = (await s.execute(select(Integration.config))).scalar_one()
    assert "enc:v1:" not in json.dumps(config)
    # The old secret no longer opens the door.
    answer = await gh.deliver("issues", payload("issues.opened"))
    assert answer.status == 401


async def test_disconnect_by_cookie_needs_the_csrf_token(client, made) -> None:
    from tests.conftest import login

    await made.user("frank")
    csrf = await login(client, "frank")
    assert (await client.post("/api/integrations/github/disconnect")).status == 403
    answer = await client.post(
        "/api/integrations/github/disconnect", headers={"X-CSRF-Token": csrf}
    )
    assert answer.status == 200


async def test_the_switch_turns_a_connector_off_and_on_without_losing_secrets(gh) -> None:  # noqa: F811
    off = await gh.client.post(
        "/api/integrations/github/config", json={"enabled": False}, headers=gh.auth
    )
    assert (await off.json())["is_active"] is False
    assert (await gh.deliver("issues", payload("issues.opened"))).status == 401
    on = await gh.client.post(
        "/api/integrations/github/config", json={"enabled": "true"}, headers=gh.auth
    )
    body = await on.json()
    assert body["is_active"] is True and "webhook_secret" not in body  # the same secret
    assert (await gh.deliver("issues", payload("issues.opened"))).status == 200


async def test_a_delivery_is_the_last_event_and_clears_a_stale_error(gh) -> None:  # noqa: F811
    store = gh.app[GITHUB].store
    row = (await store.active_rows())[0]
    await store.record_sync(row.id, "error", "GitHub answered HTTP 401")
    answer = await gh.deliver("issues", payload("issues.opened"))
    assert answer.status == 200
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["last_event_status"] == "processed" and status["last_event_at"]
    assert status["last_error"] is None
    assert status["project_name"] == "Website"


# -- the webhook pipeline ---------------------------------------------------------------------


async def test_every_redelivery_answers_200_duplicate(gh) -> None:  # noqa: F811
    delivery = str(uuid.uuid4())
    answers = [
        await gh.deliver("issues", payload("issues.opened"), delivery=delivery) for _ in range(5)
    ]
    assert [a.status for a in answers] == [200] * 5
    bodies = [await a.json() for a in answers]
    assert bodies[0]["task"] == "created"
    assert all(b == {"ok": True, "duplicate": True} for b in bodies[1:])
    metrics = await (await gh.client.get("/metrics")).text()
    assert 'gateway_webhook_deliveries_total{outcome="duplicate",provider="github"} 4.0' in metrics
    assert len(await gh.tasks()) == 1


async def test_concurrent_redeliveries_answer_200(gh) -> None:  # noqa: F811
    delivery = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(gh.deliver("issues", payload("issues.opened"), delivery=delivery) for _ in range(20))
    )
    assert {a.status for a in answers} == {200}
    assert len(await gh.tasks()) == 1
    async with gh.app[keys.DB].sessions() as s:
        assert (await s.execute(select(func.count()).select_from(WebhookDelivery))).scalar() == 1


@pytest.mark.parametrize("param", ["²", "2147483648", "99999999999", "-1", "1e3", "0"])
async def test_bad_integration_params_are_401(gh, param) -> None:  # noqa: F811
    query = "?integration=" + urllib.parse.quote(param)
    answer = await gh.deliver("issues", payload("issues.opened"), query=query)
    assert answer.status == 401
    assert not await gh.tasks()


async def test_nul_characters_are_stripped_from_provider_text(gh) -> None:  # noqa: F811
    body = payload("issues.opened")
    body["issue"]["title"] = "Broken\u0000 title"
    body["issue"]["body"] = "body\u0000text"
    answer = await gh.deliver("issues", body)
    assert answer.status == 200, await answer.text()
    (task,) = await gh.tasks()
    assert task.name == "Broken title" and task.description.startswith("bodytext")


async def test_form_encoded_deliveries_are_accepted(gh) -> None:  # noqa: F811
    raw = urllib.parse.urlencode({"payload": json.dumps(payload("issues.opened"))}).encode()
    answer = await gh.client.post(
        "/api/integrations/github/webhook",
        data=raw,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(gh.secret, raw),
        },
    )
    assert answer.status == 200, await answer.text()
    assert len(await gh.tasks()) == 1


async def test_deliveries_for_an_inactive_owner_or_project_write_nothing(gh) -> None:  # noqa: F811
    async with gh.app[keys.DB].sessions() as s:
        await s.execute(text("UPDATE projects SET status = 'archived'"))
        await s.commit()
    answer = await gh.deliver("issues", payload("issues.opened"))
    assert answer.status == 202
    assert (await answer.json())["ignored"] == "project_inactive"
    async with gh.app[keys.DB].sessions() as s:
        await s.execute(text("UPDATE projects SET status = 'active'"))
        await s.execute(text("UPDATE users SET is_active = :f"), {"f": False})
        await s.commit()
    answer = await gh.deliver("issues", payload("issues.opened"))
    assert answer.status == 202
    assert (await answer.json())["ignored"] == "owner_inactive"
    assert not await gh.tasks()


async def test_a_huge_issue_body_is_cut(gh) -> None:  # noqa: F811
    body = payload("issues.opened")
    body["issue"]["body"] = "x" * 300_000
    answer = await gh.deliver("issues", body)
    assert answer.status == 200
    (task,) = await gh.tasks()
    assert len(task.description) < 70_000 and task.description.endswith(body["issue"]["html_url"])


# -- the job runner ---------------------------------------------------------------------------


async def test_job_runner_isolates_bounds_limits_and_records(gh) -> None:  # noqa: F811
    connector = gh.app[GITHUB]
    made = gh.made
    for name in ("u2", "u3", "u4", "u5"):
        user = await made.user(name)
        row = await connector.store.get_or_create(user.id)

        async def activate(r, c, session) -> None:  # type: ignore[no-untyped-def]
            r.is_active = True

        await connector.store.update(row.id, activate)
    rows = await connector.store.active_rows()
    assert len(rows) == 5
    slow, broken = rows[1].id, rows[2].id
    running = 0
    peak = 0

    async def work(row: Integration) -> SyncOutcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            if row.id == broken:
                raise RuntimeError("token revoked")
            await asyncio.sleep(5 if row.id == slow else 0.05)
            return SyncOutcome.from_counts(1, [])
        finally:
            running -= 1

    runner = IntegrationJobRunner(concurrency=2, time_limit=0.5)
    report = await runner.run_all("test_job", connector, work)
    assert peak <= 2
    assert (report.succeeded, report.failed, report.outcome) == (3, 2, "partial")
    async with gh.app[keys.DB].sessions() as s:
        recorded = {
            r.id: (r.last_sync_status, r.last_error)
            for r in (await s.execute(select(Integration))).scalars()
        }
    assert recorded[slow] == ("error", "stopped after 0 s")
    assert recorded[broken][0] == "error" and "token revoked" in recorded[broken][1]
    assert sum(1 for status, _ in recorded.values() if status == "success") == 3


def test_sync_status_rules() -> None:
    assert SyncOutcome.from_counts(0, [], "down").status == "error"
    assert SyncOutcome.from_counts(3, [], "down").status == "partial"
    assert SyncOutcome.from_counts(3, ["#4 bad"]).status == "partial"
    assert SyncOutcome.from_counts(3, []).status == "success"


# -- the timer-event outbox -------------------------------------------------------------------


async def _start_and_stop(client, made: Made) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    user = await made.user("olga")
    project = await made.project("Outbox")
    auth = {"Authorization": f"Bearer {await made.token(user)}"}
    started = await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    assert started.status == 201
    stopped = await client.post("/api/timer/stop", headers=auth)
    assert stopped.status == 200
    return user.id, auth


async def test_outbox_delivers_each_timer_event_once_per_subscriber(
    aiohttp_client, settings
) -> None:
    app = create_app(settings, dispatch_events=False)
    client = await aiohttp_client(app)
    outbox: TimerOutbox = app[keys.OUTBOX]
    records: list = []

    async def subscriber(record) -> None:  # type: ignore[no-untyped-def]
        records.append(record)

    outbox.subscribe("test", subscriber)
    user_id, _ = await _start_and_stop(client, Made(app))
    assert await outbox.dispatch_due() == 2
    assert [(r.kind, r.user_id) for r in records] == [("started", user_id), ("stopped", user_id)]
    assert await outbox.dispatch_once() == 0  # done events are not handed out again
    event = await app[keys.TIMER].describe(records[1])
    assert (event.kind, event.project_name, event.user_display_name) == (
        "timer.stopped",
        "Outbox",
        "olga",
    )
    assert event.entry["duration_seconds"] is not None


async def test_outbox_retries_with_backoff_and_gives_up_on_permanent_failures(
    aiohttp_client, settings
) -> None:
    app = create_app(settings, dispatch_events=False)
    client = await aiohttp_client(app)
    outbox: TimerOutbox = app[keys.OUTBOX]
    calls = {"flaky": 0, "permanent": 0}

    async def flaky(record) -> None:  # type: ignore[no-untyped-def]
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("Slack is down")

    async def permanent(record) -> None:  # type: ignore[no-untyped-def]
        calls["permanent"] += 1
        raise PermanentFailure("channel_not_found")

    outbox.subscribe("flaky", flaky)
    outbox.subscribe("permanent", permanent)
    user = await Made(app).user("pat")
    project = await Made(app).project("Retry")
    auth = {"Authorization": f"Bearer {await Made(app).token(user)}"}
    await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    assert await outbox.dispatch_once() == 1
    assert calls == {"flaky": 1, "permanent": 1}
    async with app[keys.DB].sessions() as s:
        row = (await s.execute(select(TimerEventRow))).scalar_one()
    assert row.done_at is None and row.available_at > row.created_at  # backed off
    done = row.done_subscribers.split("\n")
    assert "permanent" in done and "flaky" not in done and "Slack is down" in row.last_error
    assert await outbox.dispatch_once() == 0  # not due yet
    outbox.clock = lambda: settings_now() + timedelta(minutes=1)
    assert await outbox.dispatch_once() == 1
    assert calls == {"flaky": 2, "permanent": 1}  # the permanent one is not retried
    async with app[keys.DB].sessions() as s:
        row = (await s.execute(select(TimerEventRow))).scalar_one()
    assert row.done_at is not None


def settings_now():  # type: ignore[no-untyped-def]
    from gateway.timeutil import utcnow

    return utcnow()


async def test_outbox_skips_events_older_than_the_age_limit(aiohttp_client, settings) -> None:
    app = create_app(settings, dispatch_events=False)
    client = await aiohttp_client(app)
    outbox: TimerOutbox = app[keys.OUTBOX]
    seen: list[int] = []

    async def subscriber(record) -> None:  # type: ignore[no-untyped-def]
        seen.append(record.id)

    outbox.subscribe("test", subscriber)
    await _start_and_stop(client, Made(app))
    outbox.clock = lambda: settings_now() + timedelta(days=2)  # the gateway was down for days
    assert await outbox.dispatch_due() == 2
    assert seen == []


async def test_two_dispatchers_never_hand_out_one_event_twice(aiohttp_client, settings) -> None:
    app = create_app(settings, dispatch_events=False)
    client = await aiohttp_client(app)
    db = app[keys.DB]
    seen: list[int] = []

    async def subscriber(record) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        seen.append(record.id)

    dispatchers = [TimerOutbox(db) for _ in range(3)]
    for dispatcher in dispatchers:
        dispatcher.subscribe("test", subscriber)
    made = Made(app)
    project = await made.project("Race")
    for i in range(10):
        user = await made.user(f"racer{i}")
        auth = {"Authorization": f"Bearer {await made.token(user)}"}
        await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    while sum(await asyncio.gather(*(d.dispatch_once() for d in dispatchers))):
        pass
    assert len(seen) == 10 and len(set(seen)) == 10


@pytest.mark.postgres
async def test_a_row_written_by_timetracker_itself_becomes_an_event(
    aiohttp_client, settings
) -> None:
    app = create_app(settings, dispatch_events=False)
    await aiohttp_client(app)
    made = Made(app)
    user = await made.user("tt_ui")
    project = await made.project("UI")
    seen: list[tuple[str, int]] = []

    async def subscriber(record) -> None:  # type: ignore[no-untyped-def]
        seen.append((record.kind, record.entry_id))

    app[keys.OUTBOX].subscribe("test", subscriber)
    async with app[keys.DB].engine.begin() as conn:  # as TimeTracker's own UI writes it
        entry_id = (
            await conn.execute(
                text(
                    "INSERT INTO time_entries (user_id, project_id, start_time, source, "
                    "billable, paid, created_at, updated_at) VALUES (:u, :p, now(), 'manual', "
                    "true, false, now(), now()) RETURNING id"
                ),
                {"u": user.id, "p": project.id},
            )
        ).scalar_one()
    async with app[keys.DB].engine.begin() as conn:
        await conn.execute(
            text("UPDATE time_entries SET end_time = now() WHERE id = :i"), {"i": entry_id}
        )
        await conn.execute(  # not a stop: the event is written once
            text("UPDATE time_entries SET notes = 'x' WHERE id = :i"), {"i": entry_id}
        )
    assert await app[keys.OUTBOX].dispatch_due() == 2
    assert seen == [("started", entry_id), ("stopped", entry_id)]
    # The trigger never fails TimeTracker's write, even when it cannot record the event.
    async with app[keys.DB].engine.connect() as conn:
        async with conn.begin() as tx:
            await conn.execute(text("ALTER TABLE gateway_timer_events RENAME TO gw_gone"))
            await conn.execute(
                text(
                    "INSERT INTO time_entries (user_id, project_id, start_time, source, "
                    "billable, paid, created_at, updated_at) VALUES (:u, :p, now(), 'manual', "
                    "true, false, now(), now())"
                ),
                {"u": user.id, "p": project.id},
            )
            await tx.rollback()


# -- the GitHub task write: two executors, one behaviour --------------------------------------


@pytest.mark.postgres
async def test_both_task_executors_write_the_same_rows(app, made) -> None:
    from gateway.connectors.github import core
    from gateway.connectors.github.tasks import FunctionExecutor, PythonExecutor, plan_task
    from gateway.timeutil import utcnow_naive

    db = app[keys.DB]
    await db.inspect_optional_tables()
    owner = await made.user("exec")
    projects = [await made.project("Function"), await made.project("Python")]
    executors = [FunctionExecutor(db), PythonExecutor(db)]
    base = payload("issues.opened")["issue"]
    steps = [
        (dict(base, title="First"), {"create": True, "status": None}),
        (dict(base, title="First"), {"create": True, "status": None}),
        (dict(base, title="Renamed", labels=[{"name": "bug"}]), {"create": True, "status": None}),
        (dict(base, state="closed"), {"create": False, "status": "done"}),
        (dict(base, number=99), {"create": False, "status": "done"}),
        (dict(base, number=7, labels=[{"name": "wontfix"}]), {"create": True, "status": None}),
        (dict(base), {"create": True, "status": "todo"}),
    ]
    outcomes: list[list[tuple[str, bool]]] = [[], []]
    for index, (executor, project) in enumerate(zip(executors, projects, strict=True)):
        config = {"default_project_id": project.id, "label_filter": None}
        for n, (issue_data, options) in enumerate(steps):
            if n == 5:
                config["label_filter"] = "bug"
            now = utcnow_naive().replace(microsecond=0)
            plan = plan_task(config, owner.id, core.Issue.from_api(issue_data), now=now, **options)
            async with db.write_transaction() as session:
                change = await executor.in_session(session, plan)
                await session.commit()
            outcomes[index].append((change.action, change.task_id is not None))
    assert outcomes[0] == outcomes[1]
    columns = (Task.name, Task.description, Task.priority, Task.status, Task.external_ref)
    async with db.sessions() as s:
        rows = [
            (await s.execute(select(*columns).where(Task.project_id == p.id).order_by(Task.id)))
            .all()
            for p in projects
        ]
    assert rows[0] == rows[1] and rows[0]


# -- structure --------------------------------------------------------------------------------


def _imports(path: Path, package_root: Path) -> set[str]:
    """Modules of the gateway package a file imports (TYPE_CHECKING blocks too: no excuses)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    module = ".".join(path.relative_to(package_root.parent).with_suffix("").parts)
    module = module.removesuffix(".__init__")

    class Visitor(ast.NodeVisitor):
        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.startswith("gateway"))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            name = node.module or ""
            if node.level:
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else (
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                )
                name = ".".join([*base, name] if name else base)
            if not name.startswith("gateway"):
                return
            for alias in node.names:
                candidate = f"{name}.{alias.name}"
                sub = package_root.parent / Path(*candidate.split("."))
                found.add(candidate if (sub.with_suffix(".py").exists() or sub.is_dir()) else name)

    Visitor().visit(tree)
    return found


def test_the_package_has_no_import_cycles() -> None:
    root = REPO / "gateway"
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {m for m in _imports(path, root) if m != module}
    # A submodule importing its parent package's names is fine only if the parent does not
    # import it back: that is the cycle searched for here.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt])
            elif not state.get(nxt):
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    assert cycles == [], cycles


def test_connectors_base_imports_no_web_layer() -> None:
    imported = _imports(REPO / "gateway/connectors/base.py", REPO / "gateway")
    assert not {m for m in imported if m.startswith(("gateway.auth", "gateway.web"))}


def test_database_commands_do_not_build_the_web_app(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    script = (
        "import sys; from gateway.cli import main; code = main(['migrate']); "
        "print('APP' if 'gateway.app' in sys.modules else 'NOAPP'); sys.exit(code)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
    }
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("NOAPP")


async def test_handled_events_are_pruned_after_a_day(aiohttp_client, settings) -> None:
    app = create_app(replace(settings, event_max_age=600), dispatch_events=False)
    client = await aiohttp_client(app)
    outbox: TimerOutbox = app[keys.OUTBOX]
    assert outbox.max_age == timedelta(seconds=600)
    await _start_and_stop(client, Made(app))
    assert await outbox.dispatch_due() == 2
    assert await outbox.prune() == 0  # handled just now: kept for a day
    outbox.clock = lambda: settings_now() + timedelta(days=2)
    report = await app[keys.SCHEDULER].run("timer_events_prune")
    assert report.detail == {"removed": 2}
    async with app[keys.DB].sessions() as s:
        assert (await s.execute(select(func.count()).select_from(TimerEventRow))).scalar() == 0


async def test_a_hanging_subscriber_is_cut_and_a_lost_lease_never_overwrites(
    aiohttp_client, settings, monkeypatch
) -> None:
    import gateway.outbox as outbox_module

    monkeypatch.setattr(outbox_module, "SUBSCRIBER_TIMEOUT", 0.2)
    app = create_app(settings, dispatch_events=False)
    client = await aiohttp_client(app)
    first, second = TimerOutbox(app[keys.DB]), TimerOutbox(app[keys.DB])
    calls: list[str] = []

    async def hangs(record) -> None:  # type: ignore[no-untyped-def]
        calls.append("first")
        # Meanwhile the lease runs out and the other dispatcher takes the event over.
        second.clock = first.clock = lambda: settings_now() + outbox_module.LEASE * 2
        assert await second.dispatch_once() == 1
        await asyncio.sleep(10)  # cut by SUBSCRIBER_TIMEOUT

    async def works(record) -> None:  # type: ignore[no-untyped-def]
        calls.append("second")

    first.subscribe("slack", hangs)
    second.subscribe("slack", works)
    user = await Made(app).user("lease")
    project = await Made(app).project("Lease")
    auth = {"Authorization": f"Bearer {await Made(app).token(user)}"}
    await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    assert await first.dispatch_once() == 1  # returns after the timeout, not after 10 s
    assert calls == ["first", "second"]
    async with app[keys.DB].sessions() as s:
        row = (await s.execute(select(TimerEventRow))).scalar_one()
    # The second dispatcher's success stands; the first one's timeout did not overwrite it.
    assert row.done_at is not None and row.done_subscribers == "slack" and row.last_error is None


@pytest.mark.postgres
async def test_a_notification_wakes_the_dispatcher_before_the_poll(aiohttp_client, settings) -> None:
    app = create_app(settings)  # the dispatcher runs, listening
    await aiohttp_client(app)
    made = Made(app)
    user = await made.user("listen")
    project = await made.project("Listen")
    seen = asyncio.Event()

    async def subscriber(record) -> None:  # type: ignore[no-untyped-def]
        seen.set()

    app[keys.OUTBOX].subscribe("test", subscriber)
    await asyncio.sleep(0.2)  # let the loop reach its wait
    async with app[keys.DB].engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO time_entries (user_id, project_id, start_time, source, billable, "
                "paid, created_at, updated_at) VALUES (:u, :p, now(), 'manual', true, false, "
                "now(), now())"
            ),
            {"u": user.id, "p": project.id},
        )
    # The poll is every 5 s: within 2 s only the NOTIFY can have woken it.
    await asyncio.wait_for(seen.wait(), timeout=2)
