"""GitHub connector end to end: real payloads, real signatures, a local fake GitHub API."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select, text

from gateway import keys
from gateway.app import create_app
from gateway.connectors.github.core import sign
from gateway.db.models import Integration, Task, TimeEntry
from tests.conftest import Made
from tests.fakes import issue, payload


@pytest.fixture
async def gh(aiohttp_client, settings, fake_github):  # type: ignore[no-untyped-def]
    fake, url = fake_github
    app = create_app(replace(settings, github_api_url=url))
    client = await aiohttp_client(app)
    made = Made(app)
    owner = await made.user("alice", role="admin")
    project = await made.project("Website")
    token = await made.token(owner)
    auth = {"Authorization": f"Bearer {token}"}
    saved = await client.post(
        "/api/integrations/github/config",
        json={
            "repo_owner": "Codertocat",
            "repo_name": "Hello-World",
            "default_project_id": project.id,
            "github_token": fake.token,
        },
        headers=auth,
    )
    assert saved.status == 200, await saved.text()
    body = await saved.json()
    assert body["is_active"] is True
    return _GH(app, client, made, owner, project, auth, body["webhook_secret"], fake)


class _GH:
    def __init__(self, app, client, made, owner, project, auth, secret, fake) -> None:  # type: ignore[no-untyped-def]
        self.app, self.client, self.made, self.owner = app, client, made, owner
        self.project, self.auth, self.secret, self.fake = project, auth, secret, fake

    async def deliver(
        self,
        event: str,
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        delivery: str | None = None,
        query: str = "",
        signature: str | None = None,
    ):  # type: ignore[no-untyped-def]
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature
            if signature is not None
            else sign(secret or self.secret, raw),
        }
        return await self.client.post(
            f"/api/integrations/github/webhook{query}", data=raw, headers=headers
        )

    async def tasks(self) -> list[Task]:
        async with self.app[keys.DB].sessions() as s:
            return list((await s.execute(select(Task).order_by(Task.id))).scalars())


# -- webhooks ----------------------------------------------------------------------------------


async def test_ping(gh) -> None:
    response = await gh.deliver("ping", payload("ping"))
    assert response.status == 200
    assert (await response.json())["ok"] is True
    assert await gh.tasks() == []


async def test_opened_creates_a_task(gh) -> None:
    response = await gh.deliver("issues", payload("issues.opened"))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["task"] == "created"
    [task] = await gh.tasks()
    data = payload("issues.opened")["issue"]
    assert task.name == data["title"]
    assert task.external_ref == "github_issue_1"
    assert task.status == "todo"
    assert task.priority == "high"  # the payload's issue is labelled 'bug'
    assert task.project_id == gh.project.id
    assert task.created_by == gh.owner.id
    assert data["html_url"] in task.description
    assert (data["body"] or "").strip()[:20] in task.description


async def test_empty_body_issue(gh) -> None:
    assert (await gh.deliver("issues", payload("issues.opened.with-empty-body"))).status == 200
    [task] = await gh.tasks()
    assert task.description.strip().endswith(
        payload("issues.opened.with-empty-body")["issue"]["html_url"]
    )


async def test_lifecycle_edit_label_close_reopen_delete(gh) -> None:
    await gh.deliver("issues", payload("issues.opened"))
    edited = payload("issues.edited")
    edited["issue"]["title"] = "A new title"
    edited["issue"]["body"] = "New body"
    assert (await gh.deliver("issues", edited)).status == 200
    [task] = await gh.tasks()
    assert task.name == "A new title" and task.description.startswith("New body")
    labeled = payload("issues.labeled")
    labeled["issue"]["labels"] = [{"name": "Critical"}]
    await gh.deliver("issues", labeled)
    assert (await gh.tasks())[0].priority == "urgent"
    await gh.deliver("issues", payload("issues.closed"))
    [task] = await gh.tasks()
    assert task.status == "done" and task.completed_at is not None
    await gh.deliver("issues", payload("issues.reopened"))
    [task] = await gh.tasks()
    assert task.status == "todo" and task.completed_at is None
    await gh.deliver("issues", payload("issues.deleted"))
    [task] = await gh.tasks()
    assert task.status == "cancelled"


async def test_long_titles_are_cut_to_200(gh) -> None:
    opened = payload("issues.opened")
    opened["issue"]["title"] = "x" * 500
    assert (await gh.deliver("issues", opened)).status == 200
    [task] = await gh.tasks()
    assert len(task.name) <= 200


async def test_assigned_links_user_and_starts_timer(gh) -> None:
    await gh.client.post(
        "/api/integrations/github/config", json={"auto_start_timer": True}, headers=gh.auth
    )
    dev = await gh.made.user("dev", github_username="CODERTOCAT")
    response = await gh.deliver("issues", payload("issues.assigned"))
    body = await response.json()
    assert response.status == 200, body
    assert body["timer"] == "started"
    [task] = await gh.tasks()
    assert task.assigned_to == dev.id
    async with gh.app[keys.DB].sessions() as s:
        entry = (await s.execute(select(TimeEntry))).scalar_one()
    assert (entry.user_id, entry.task_id, entry.end_time, entry.source) == (
        dev.id,
        task.id,
        None,
        "auto",
    )
    # A second assignment never stops or replaces the running timer, and says why.
    again = await (await gh.deliver("issues", payload("issues.assigned"))).json()
    assert again["timer"].startswith("not started")
    # Unassigning that user clears the assignee.
    await gh.deliver("issues", payload("issues.unassigned"))
    assert (await gh.tasks())[0].assigned_to is None


async def test_assigned_without_auto_start_or_linked_user(gh) -> None:
    body = await (await gh.deliver("issues", payload("issues.assigned"))).json()
    assert "no TimeTracker user" in body["assignee"]
    await gh.made.user("dev", github_username="codertocat")
    body = await (await gh.deliver("issues", payload("issues.assigned"))).json()
    assert body["timer"] == "not started: auto-start is off"
    async with gh.app[keys.DB].sessions() as s:
        assert (await s.execute(select(TimeEntry))).first() is None


async def test_redelivery_does_the_work_once(gh) -> None:
    delivery = str(uuid.uuid4())
    first = await gh.deliver("issues", payload("issues.opened"), delivery=delivery)
    assert first.status == 200
    edited = payload("issues.edited")
    edited["issue"]["title"] = "Changed"
    await gh.deliver("issues", edited)
    again = await gh.deliver("issues", payload("issues.opened"), delivery=delivery)
    assert again.status == 200 and (await again.json())["duplicate"] is True
    [task] = await gh.tasks()
    assert task.name == "Changed"  # the replayed 'opened' did not overwrite the edit


async def test_opened_and_assigned_at_once_make_one_task(gh) -> None:
    await gh.made.user("dev", github_username="Codertocat")
    responses = await asyncio.gather(
        gh.deliver("issues", payload("issues.opened")),
        gh.deliver("issues", payload("issues.assigned")),
        gh.deliver("issues", payload("issues.opened.with-organization")),
        gh.deliver("issues", payload("issues.labeled")),
    )
    assert all(r.status == 200 for r in responses)
    assert len(await gh.tasks()) == 1


@pytest.mark.parametrize(
    "problem",
    ["missing", "wrong_secret", "tampered", "malformed", "unknown_integration", "bad_param"],
)
async def test_bad_signatures_get_401_and_write_nothing(gh, problem) -> None:
    body = json.dumps(payload("issues.opened")).encode()
    kwargs: dict[str, Any] = {}
    if problem == "missing":
        kwargs["signature"] = ""
    elif problem == "wrong_secret":
        kwargs["secret"] = "not-the-secret"
    elif problem == "tampered":
        kwargs["signature"] = sign(gh.secret, body)
        body = body.replace(b"Spelling", b"Spellink")
    elif problem == "malformed":
        kwargs["signature"] = "sha1=abc"
    elif problem == "unknown_integration":
        kwargs["query"] = "?integration=999999"
    else:
        kwargs["query"] = "?integration=1;DROP"
    response = await gh.deliver("issues", body, **kwargs)
    assert response.status == 401
    assert (await response.json())["ok"] is False
    assert await gh.tasks() == []


async def test_webhook_url_with_integration_id(gh) -> None:
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    url = status["webhook_url"]
    assert url.startswith("http://127.0.0.1:8080/api/integrations/github/webhook?integration=")
    query = url[url.index("?") :]
    assert (await gh.deliver("issues", payload("issues.opened"), query=query)).status == 200


async def test_ignored_events_actions_and_repositories(gh) -> None:
    other = payload("issues.opened")
    other["repository"]["full_name"] = "someone/else"
    response = await gh.deliver("issues", other)
    assert response.status == 202 and (await response.json())["ignored"] == "repository"
    milestoned = payload("issues.opened")
    milestoned["action"] = "milestoned"
    response = await gh.deliver("issues", milestoned)
    assert response.status == 202 and (await response.json())["ignored"] == "issues.milestoned"
    response = await gh.deliver("push", {"ref": "refs/heads/main"})
    assert response.status == 202 and (await response.json())["ignored"].startswith("push")
    assert await gh.tasks() == []


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"action": "opened", "issue": "nope"}'])
async def test_malformed_payloads_get_400(gh, raw) -> None:
    response = await gh.deliver("issues", raw)
    assert response.status == 400
    assert await gh.tasks() == []


async def test_missing_event_header_gets_400(gh) -> None:
    raw = json.dumps(payload("issues.opened")).encode()
    response = await gh.client.post(
        "/api/integrations/github/webhook",
        data=raw,
        headers={"X-Hub-Signature-256": sign(gh.secret, raw), "Content-Type": "application/json"},
    )
    assert response.status == 400


async def test_large_bodies_up_to_25mb(gh) -> None:
    opened = payload("issues.opened")
    opened["issue"]["body"] = "y" * (3 * 1024 * 1024)  # over the app-wide 1 MiB cap
    assert (await gh.deliver("issues", opened)).status == 200
    too_big = b" " * (25 * 1024 * 1024 + 1)
    assert (await gh.deliver("issues", too_big)).status == 413


async def test_label_filter_decides_which_issues_become_tasks(gh) -> None:
    await gh.client.post(
        "/api/integrations/github/config", json={"label_filter": "BUG"}, headers=gh.auth
    )
    assert (await (await gh.deliver("issues", payload("issues.opened"))).json())[
        "task"
    ] == "created"
    other = payload("issues.opened")
    other["issue"]["number"] = 2
    other["issue"]["labels"] = [{"name": "enhancement"}]
    body = await (await gh.deliver("issues", other)).json()
    assert body["task"] == "skipped" and body["reason"] == "label filter"
    assert len(await gh.tasks()) == 1


async def test_tasks_of_other_projects_are_never_touched(gh) -> None:
    other_project = await gh.made.project("Other")
    foreign = await gh.made.task(other_project, gh.owner, "Foreign")
    async with gh.app[keys.DB].sessions() as s:
        row = await s.get(Task, foreign.id)
        row.external_ref = "github_issue_1"
        await s.commit()
    await gh.deliver("issues", payload("issues.opened"))
    await gh.deliver("issues", payload("issues.closed"))
    tasks = {t.id: t for t in await gh.tasks()}
    assert tasks[foreign.id].name == "Foreign" and tasks[foreign.id].status == "todo"
    assert len(tasks) == 2


async def test_metrics_count_deliveries(gh) -> None:
    await gh.deliver("issues", payload("issues.opened"))
    await gh.deliver("issues", payload("issues.opened"), secret="wrong-secret")
    text = await (await gh.client.get("/metrics")).text()
    assert 'gateway_webhook_deliveries_total{outcome="processed",provider="github"} 1.0' in text
    assert 'gateway_webhook_deliveries_total{outcome="rejected",provider="github"} 1.0' in text


# -- config, status, test ----------------------------------------------------------------------


async def test_status_never_shows_secrets(gh) -> None:
    response = await gh.client.get("/api/integrations/github/status", headers=gh.auth)
    body = await response.json()
    text = json.dumps(body)
    assert gh.secret not in text and gh.fake.token not in text
    assert body["has_github_token"] is True and body["has_webhook_secret"] is True
    assert body["configured"] and body["is_active"] and body["connected"]
    assert body["repo_owner"] == "Codertocat" and body["default_project_id"] == gh.project.id
    assert "github_token" not in body and "webhook_secret" not in body
    async with gh.app[keys.DB].engine.connect() as conn:
        raw = (await conn.exec_driver_sql("SELECT config FROM integrations")).scalar()
    assert gh.secret not in str(raw) and gh.fake.token not in str(raw)


async def test_blank_secret_keeps_the_stored_one_and_regenerate_replaces_it(gh) -> None:
    kept = await (
        await gh.client.post(
            "/api/integrations/github/config",
            json={"github_token": "", "webhook_secret": ""},
            headers=gh.auth,
        )
    ).json()
    assert kept == {"ok": True, "is_active": True}
    assert (await gh.deliver("issues", payload("issues.opened"))).status == 200
    regenerated = await (
        await gh.client.post(
            "/api/integrations/github/config",
            json={"generate_webhook_secret": True},
            headers=gh.auth,
        )
    ).json()
    new_secret = regenerated["webhook_secret"]
    assert new_secret != gh.secret
    assert (await gh.deliver("issues", payload("issues.opened"))).status == 401
    assert (await gh.deliver("issues", payload("issues.opened"), secret=new_secret)).status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repo_owner": "-bad-"}, "repo_owner"),
        ({"repo_name": ".."}, "repo_name"),
        ({"repo_name": "a/b"}, "repo_name"),
        ({"default_project_id": 99999}, "default_project_id"),
        ({"default_project_id": "ARCHIVED"}, "default_project_id"),
        ({"auto_start_timer": "perhaps"}, "auto_start_timer"),
        ({"priority_labels": {"huge": ["x"]}}, "priority_labels"),
        ({"priority_labels": ["bug"]}, "priority_labels"),
        ({"github_token": 12}, "github_token"),
    ],
)
async def test_bad_config_gets_400_with_field_and_changes_nothing(gh, body, field) -> None:
    archived = await gh.made.project("Old", status="archived")
    if body.get("default_project_id") == "ARCHIVED":
        body = {"default_project_id": archived.id}
    before = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    response = await gh.client.post("/api/integrations/github/config", json=body, headers=gh.auth)
    assert response.status == 400
    answer = await response.json()
    assert answer["ok"] is False and answer["field"] == field
    after = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert after == before


async def test_one_repository_per_project(gh) -> None:
    bob = await gh.made.user("bob")
    token = await gh.made.token(bob)
    response = await gh.client.post(
        "/api/integrations/github/config",
        json={"repo_owner": "other", "repo_name": "repo", "default_project_id": gh.project.id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 400
    assert (await response.json())["field"] == "default_project_id"


async def test_form_strings_are_accepted(gh) -> None:
    response = await gh.client.post(
        "/api/integrations/github/config", json={"auto_start_timer": "true"}, headers=gh.auth
    )
    assert response.status == 200
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["auto_start_timer"] is True


async def test_connection_test_calls_github(gh) -> None:
    body = await (await gh.client.post("/api/integrations/github/test", headers=gh.auth)).json()
    assert body == {"ok": True, "login": "octocat", "connected_as": "octocat"}
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["connected_as"] == "octocat" and status["last_checked_at"]
    assert gh.fake.requests[-1].path == "/user"
    await gh.client.post(
        "/api/integrations/github/config", json={"github_token": "ghp_wrong"}, headers=gh.auth
    )
    body = await (await gh.client.post("/api/integrations/github/test", headers=gh.auth)).json()
    assert body["ok"] is False and "Bad credentials" in body["error"]


async def test_operations_on_missing_integration_answer_not_configured(gh) -> None:
    bob = await gh.made.user("bob", role="admin")
    auth = {"Authorization": "Bearer " + await gh.made.token(bob)}
    for path in ("/api/integrations/github/test", "/api/integrations/github/sync"):
        response = await gh.client.post(path, headers=auth)
        assert response.status == 409
        assert await response.json() == {"ok": False, "error": "Integration not configured"}
    status = await (await gh.client.get("/api/integrations/github/status", headers=auth)).json()
    assert status["configured"] is False and status["is_active"] is False


# -- sync --------------------------------------------------------------------------------------


async def test_sync_follows_pages_skips_prs_and_upserts(gh) -> None:
    gh.fake.issues = [issue(n, f"Issue {n}", ("bug",) if n % 2 else ()) for n in range(1, 121)]
    gh.fake.issues.append(issue(500, "A pull request", pr=True))
    await gh.deliver("issues", payload("issues.opened"))  # issue 1 exists already
    body = await (await gh.client.post("/api/integrations/github/sync", headers=gh.auth)).json()
    assert body == {"ok": True, "created": 119, "updated": 1, "skipped": 1, "errors": []}, body
    pages = [r for r in gh.fake.requests if r.path.endswith("/issues")]
    assert len(pages) == 3
    assert pages[0].headers["Authorization"] == f"Bearer {gh.fake.token}"
    tasks = await gh.tasks()
    assert len(tasks) == 120
    assert {t.priority for t in tasks if t.external_ref == "github_issue_3"} == {"high"}
    again = await (await gh.client.post("/api/integrations/github/sync", headers=gh.auth)).json()
    assert (again["created"], again["updated"], again["skipped"]) == (0, 0, 121)
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["last_sync_status"] == "success" and status["last_sync_at"].endswith("Z")


async def test_sync_honours_rate_limits_and_reports_bad_issues(gh) -> None:
    gh.fake.issues = [issue(1), {"number": 2, "title": None}, issue(3)]
    gh.fake.rate_limited_once = True
    body = await (await gh.client.post("/api/integrations/github/sync", headers=gh.auth)).json()
    assert body["ok"] is True and body["created"] == 2
    assert [e["issue"] for e in body["errors"]] == [2]
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["last_sync_status"] == "partial"


async def test_sync_failure_is_recorded(gh) -> None:
    await gh.client.post(
        "/api/integrations/github/config", json={"github_token": "ghp_wrong"}, headers=gh.auth
    )
    response = await gh.client.post("/api/integrations/github/sync", headers=gh.auth)
    assert response.status == 502
    body = await response.json()
    assert body["ok"] is False and "Bad credentials" in body["error"]
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["last_sync_status"] == "error" and "Bad credentials" in status["last_error"]


async def test_sync_is_for_admins(gh) -> None:
    bob = await gh.made.user("bob")
    auth = {"Authorization": "Bearer " + await gh.made.token(bob)}
    assert (await gh.client.post("/api/integrations/github/sync", headers=auth)).status == 403


@pytest.mark.postgres
async def test_racing_deliveries_make_one_task_per_issue_on_postgres(gh) -> None:
    deliveries = []
    for n in range(1, 6):
        for action in ("issues.opened", "issues.labeled", "issues.edited"):
            body = payload(action)
            body["issue"]["number"] = n
            deliveries.append(gh.deliver("issues", body))
    responses = await asyncio.gather(*deliveries)
    assert all(r.status == 200 for r in responses)
    async with gh.app[keys.DB].sessions() as s:
        counts = (
            await s.execute(select(Task.external_ref, func.count()).group_by(Task.external_ref))
        ).all()
    assert sorted(counts) == [(f"github_issue_{n}", 1) for n in range(1, 6)]
    async with gh.app[keys.DB].sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Integration))).scalar() == 1


async def test_prune_job_forgets_old_delivery_ids(gh) -> None:
    from datetime import timedelta

    from gateway.db.models import WebhookDelivery
    from gateway.timeutil import utcnow_naive

    await gh.deliver("issues", payload("issues.opened"))
    async with gh.app[keys.DB].sessions() as s:
        s.add(
            WebhookDelivery(
                provider="github",
                delivery_id="old:1",
                received_at=utcnow_naive() - timedelta(days=15),
            )
        )
        await s.commit()
    report = await gh.app[keys.SCHEDULER].run("webhook_deliveries_prune")
    assert report.outcome == "success" and report.detail == {"removed": 1}
    async with gh.app[keys.DB].sessions() as s:
        left = (await s.execute(select(WebhookDelivery.delivery_id))).scalars().all()
    assert len(left) == 1 and not left[0].startswith("old")


async def test_card_links_the_users_github_login(gh) -> None:
    saved = await gh.client.post(
        "/api/integrations/github/config", json={"github_username": "Codertocat"}, headers=gh.auth
    )
    assert saved.status == 200
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["github_username"] == "Codertocat"
    body = await (await gh.deliver("issues", payload("issues.assigned"))).json()
    assert body["assigned_to"] == gh.owner.id
    bad = await gh.client.post(
        "/api/integrations/github/config", json={"github_username": "not a login"}, headers=gh.auth
    )
    assert bad.status == 400 and (await bad.json())["field"] == "github_username"
    cleared = await gh.client.post(
        "/api/integrations/github/config", json={"github_username": ""}, headers=gh.auth
    )
    assert cleared.status == 200
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["github_username"] is None


async def test_sync_and_opened_keep_the_status_people_set(gh) -> None:
    gh.fake.issues = [issue(1, "Spelling")]
    await gh.client.post("/api/integrations/github/sync", headers=gh.auth)
    async with gh.app[keys.DB].sessions() as s:
        await s.execute(text("UPDATE tasks SET status = 'in_progress'"))
        await s.commit()
    await gh.client.post("/api/integrations/github/sync", headers=gh.auth)
    await gh.deliver("issues", payload("issues.opened"))
    assert [t.status for t in await gh.tasks()] == ["in_progress"]
    await gh.deliver("issues", payload("issues.reopened"))
    assert [t.status for t in await gh.tasks()] == ["todo"]


async def test_a_github_login_belongs_to_one_user(gh) -> None:
    bob = await gh.made.user("bob")
    bob_auth = {"Authorization": "Bearer " + await gh.made.token(bob)}
    first = await gh.client.post(
        "/api/integrations/github/config", json={"github_username": "Codertocat"}, headers=bob_auth
    )
    assert first.status == 200
    second = await gh.client.post(
        "/api/integrations/github/config", json={"github_username": "codertocat"}, headers=gh.auth
    )
    assert second.status == 400 and (await second.json())["field"] == "github_username"


async def test_test_on_an_inactive_integration_is_409(gh) -> None:
    bob = await gh.made.user("bob")
    bob_auth = {"Authorization": "Bearer " + await gh.made.token(bob)}
    saved = await gh.client.post(
        "/api/integrations/github/config", json={"github_token": gh.fake.token}, headers=bob_auth
    )
    assert (await saved.json())["is_active"] is False
    response = await gh.client.post("/api/integrations/github/test", headers=bob_auth)
    assert response.status == 409
    assert gh.fake.calls == []  # GitHub was not asked


async def test_sync_never_sends_the_token_off_the_configured_api(gh, aiohttp_server) -> None:
    elsewhere: list[str] = []

    async def record(request: web.Request) -> web.Response:
        elsewhere.append(request.headers.get("Authorization", ""))
        return web.json_response([])

    other = web.Application()
    other.router.add_get("/{tail:.*}", record)
    server = await aiohttp_server(other)
    gh.fake.issues = [issue(1)] * 60  # more than one page
    gh.fake.next_link_base = str(server.make_url("/steal"))
    body = await (await gh.client.post("/api/integrations/github/sync", headers=gh.auth)).json()
    assert elsewhere == []
    assert body["created"] == 1 and "outside GITHUB_API_URL" in str(body) + str(
        await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    )


async def test_changed_config_is_saved_key_by_key(gh) -> None:
    """A save names only what it changes; other keys stay as the stored config has them."""
    await gh.client.post(
        "/api/integrations/github/config", json={"label_filter": "bug"}, headers=gh.auth
    )
    await gh.client.post(
        "/api/integrations/github/config", json={"auto_start_timer": True}, headers=gh.auth
    )
    status = await (await gh.client.get("/api/integrations/github/status", headers=gh.auth)).json()
    assert status["label_filter"] == "bug" and status["auto_start_timer"] is True
    assert status["repo_owner"] == "Codertocat" and status["is_active"] is True


async def test_sync_and_webhooks_on_the_same_issues_at_once(gh) -> None:
    """A sync and deliveries on the same issues at once: no errors, one task per issue."""
    gh.fake.issues = [issue(n, f"Issue {n}") for n in range(1, 31)]
    deliveries = []
    for n in range(1, 11):
        body = payload("issues.labeled")
        body["issue"]["number"] = n
        deliveries.append(gh.deliver("issues", body))
    sync, *responses = await asyncio.wait_for(
        asyncio.gather(
            gh.client.post("/api/integrations/github/sync", headers=gh.auth), *deliveries
        ),
        timeout=20,
    )
    assert all(r.status == 200 for r in responses)
    result = await sync.json()
    assert result["ok"] is True and result["errors"] == []
    refs = [t.external_ref for t in await gh.tasks()]
    assert sorted(refs) == sorted(f"github_issue_{n}" for n in range(1, 31))
