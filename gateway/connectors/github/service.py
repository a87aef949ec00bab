"""GitHub connector: config, issue→task upserts shared by webhooks and sync, timer auto-start."""

from __future__ import annotations

import logging
import secrets as pysecrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import keys
from gateway.auth.identity import Principal
from gateway.connectors.base import Config, Connector, bool_value
from gateway.connectors.catalog import GITHUB, SECRET_KEYS
from gateway.connectors.github import core
from gateway.db.database import Database
from gateway.db.models import Integration, Task, User, WebhookDelivery
from gateway.errors import BadRequest, Conflict, GatewayError, NotConfigured
from gateway.logs import truncate_secret
from gateway.timeutil import to_wall, utcnow_naive

log = logging.getLogger(__name__)

TASKS = Task.__table__
DELIVERY_RETENTION = timedelta(days=14)
MAX_SYNC_PAGES = 20  # 20 × 50 = 1,000 open issues per sync, a bound on one request's work
API_VERSION = "2022-11-28"
# Statuses a task moves out of when GitHub says the issue is open again.
CLOSED_STATUSES = ("done", "cancelled")


@dataclass
class TaskChange:
    """What an upsert did to the task of one issue."""

    action: str  # created, updated, unchanged, skipped
    task_id: int | None = None
    reason: str | None = None


@dataclass
class SyncResult:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


class GitHubConnector(Connector):
    slug = "github"
    provider = GITHUB
    name = "GitHub"
    secret_keys = SECRET_KEYS[GITHUB]
    defaults = {
        "repo_owner": None,
        "repo_name": None,
        "default_project_id": None,
        "auto_start_timer": False,
        "label_filter": None,
        "priority_labels": {},
    }

    # -- status -----------------------------------------------------------------------------

    def webhook_url(self, row: Integration | None) -> str:
        url = self.settings.public("/api/integrations/github/webhook")
        return f"{url}?integration={row.id}" if row is not None else url

    def is_connected(self, row: Integration, config: Config) -> bool:
        return bool(row.is_active and config.has("webhook_secret"))

    def status_extra(self, row: Integration | None, config: Config) -> dict[str, Any]:
        return {"webhook_url": self.webhook_url(row)}

    # -- config -----------------------------------------------------------------------------

    async def save(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        user = principal.user
        existing = await self.store.find(user.id)
        old = self.store.config(existing)
        owner = _text(body, "repo_owner", old.get("repo_owner"))
        repo = _text(body, "repo_name", old.get("repo_name"))
        if owner is not None and not core.validate_owner(owner):
            raise BadRequest(
                "Not a valid GitHub owner (user or organisation) name", field="repo_owner"
            )
        if repo is not None and not core.validate_repo(repo):
            raise BadRequest("Not a valid GitHub repository name", field="repo_name")
        project_id = body.get("default_project_id", old.get("default_project_id"))
        if project_id in ("", None):
            project_id = None
        else:
            async with self.db.sessions() as session:
                project = await self.app[keys.TIMER].usable_project(
                    session, user, project_id, field_name="default_project_id"
                )
            project_id = project.id
        auto_start = bool_value(body, "auto_start_timer", bool(old.get("auto_start_timer", False)))
        try:
            label_filter = core.normalize_label_filter(
                body.get("label_filter", old.get("label_filter"))
            )
        except ValueError as exc:
            raise BadRequest(str(exc), field="label_filter") from None
        try:
            priority_labels = core.normalize_priority_labels(
                body.get("priority_labels", old.get("priority_labels") or {})
            )
        except ValueError as exc:
            raise BadRequest(str(exc), field="priority_labels") from None
        token = body.get("github_token")
        if token is not None and not isinstance(token, str):
            raise BadRequest("github_token must be a string", field="github_token")
        pasted_secret = body.get("webhook_secret")
        if pasted_secret is not None and not isinstance(pasted_secret, str):
            raise BadRequest("webhook_secret must be a string", field="webhook_secret")
        if pasted_secret and len(pasted_secret.strip()) < 8:
            raise BadRequest("webhook_secret: at least 8 characters", field="webhook_secret")
        regenerate = bool_value(body, "generate_webhook_secret", False)
        if owner and repo and project_id is not None:
            await self._check_one_repo_per_project(project_id, owner, repo, user.id)

        row = await self.store.get_or_create(user.id)

        def mutate(r: Integration, config: Config) -> str | None:
            config.set("repo_owner", owner)
            config.set("repo_name", repo)
            config.set("default_project_id", project_id)
            config.set("auto_start_timer", auto_start)
            config.set("label_filter", label_filter)
            config.set("priority_labels", priority_labels)
            if token and token.strip():  # blank or absent: keep the stored token
                config.set_secret("github_token", token.strip())
            generated = None
            if pasted_secret and pasted_secret.strip():
                config.set_secret("webhook_secret", pasted_secret.strip())
            elif regenerate or not config.has("webhook_secret"):
                generated = pysecrets.token_urlsafe(32)
                config.set_secret("webhook_secret", generated)
            r.is_active = bool(
                owner and repo and project_id is not None and config.has("webhook_secret")
            )
            return generated

        row, generated = await self.store.update(row.id, mutate)
        log.info(
            "github config saved for user %s (token %s)",
            user.id,
            truncate_secret(token) if token else "unchanged",
        )
        answer: dict[str, Any] = {"ok": True, "is_active": row.is_active}
        if generated:
            answer["webhook_secret"] = generated  # shown once, so the user can paste it in GitHub
        return answer

    async def _check_one_repo_per_project(
        self, project_id: int, owner: str, repo: str, user_id: int
    ) -> None:
        """external_ref holds only the issue number: two repos in one project would collide."""
        wanted = f"{owner}/{repo}".lower()
        for other in await self.store.active_rows():
            if other.user_id == user_id:
                continue  # the user's own integration, being reconfigured
            config = self.store.config(other)
            if config.get("default_project_id") != project_id:
                continue
            theirs = f"{config.get('repo_owner')}/{config.get('repo_name')}".lower()
            if theirs != wanted:
                raise BadRequest(
                    f"Project {project_id} already receives issues from {theirs}; "
                    "use one repository per project",
                    field="default_project_id",
                )

    # -- test -------------------------------------------------------------------------------

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }

    async def test(self, principal: Principal) -> dict[str, Any]:
        row = await self.store.find(principal.user.id)
        if row is None:
            raise NotConfigured()
        token = self.store.config(row).secret("github_token")
        if not token:
            raise BadRequest("Save a GitHub token first", field="github_token")
        result = await self.http.request(
            "GitHub",
            "GET",
            f"{self.settings.github_api_url}/user",
            headers=self._headers(token),
            retry_policy=core.retry_delay,
        )
        if not result.ok or not isinstance(result.data, dict):
            return {"ok": False, "error": result.error or "GitHub answered without a user"}
        return {"ok": True, "login": result.data.get("login")}

    # -- tasks ------------------------------------------------------------------------------

    async def upsert_task(
        self,
        session: AsyncSession,
        row: Integration,
        issue: core.Issue,
        *,
        create: bool,
        status: str | None = None,
    ) -> TaskChange:
        """Create or update the task of an issue in the integration's project.

        Serialised per (project, issue) so that `opened` and `assigned` arriving together, or a
        webhook racing a sync, make one task. The caller commits.
        """
        # Core statements on the session's connection: this is the webhook hot path, and the
        # ORM unit of work costs more than the SQL here (see docs/PERFORMANCE.md).
        config = self.store.config(row)
        project_id = config.get("default_project_id")
        ref = core.external_ref(issue.number)
        conn = await session.connection()
        async with self.db.xact_lock(session, "github-task", project_id, ref):
            current = (
                await conn.execute(
                    select(
                        TASKS.c.id,
                        TASKS.c.name,
                        TASKS.c.description,
                        TASKS.c.priority,
                        TASKS.c.status,
                    )
                    .where(TASKS.c.project_id == project_id, TASKS.c.external_ref == ref)
                    .order_by(TASKS.c.id)
                    .limit(1)
                )
            ).first()
            app_tz, _ = await self.db.app_settings(session)
            now = to_wall(self.app[keys.TIMER].clock(), app_tz)
            fields = {
                "name": core.task_name(issue),
                "description": core.task_description(issue),
                "priority": core.priority_for(issue.labels, config.get("priority_labels") or {}),
            }
            if current is None:
                if not create:
                    return TaskChange("skipped", reason="no task for this issue")
                if not core.matches_label_filter(issue.labels, config.get("label_filter")):
                    return TaskChange("skipped", reason="label filter")
                new_status = status or "todo"
                task_id = (
                    await conn.execute(
                        insert(TASKS)
                        .values(
                            project_id=project_id,
                            status=new_status,
                            created_by=row.user_id,
                            created_at=now,
                            updated_at=now,
                            completed_at=now if new_status == "done" else None,
                            external_ref=ref,
                            **fields,
                        )
                        .returning(TASKS.c.id)
                    )
                ).scalar_one()
                return TaskChange("created", task_id)
            if status is not None and current.status != status:
                fields.update(status=status, completed_at=now if status == "done" else None)
            if all(getattr(current, k) == v for k, v in fields.items() if k != "completed_at"):
                return TaskChange("unchanged", current.id)
            await conn.execute(
                update(TASKS).where(TASKS.c.id == current.id).values(updated_at=now, **fields)
            )
            return TaskChange("updated", current.id)

    # -- sync -------------------------------------------------------------------------------

    async def sync(self, principal: Principal) -> dict[str, Any]:
        row = await self.store.require_active(principal.user.id)
        config = self.store.config(row)
        token = config.secret("github_token")
        if not token:
            raise BadRequest("Save a GitHub token first", field="github_token")
        url: str | None = (
            f"{self.settings.github_api_url}/repos/{config.get('repo_owner')}/"
            f"{config.get('repo_name')}/issues"
        )
        params: dict[str, str] | None = {"state": "open", "per_page": "50"}
        result = SyncResult()
        pages = 0
        fetch_error: str | None = None
        while url and pages < MAX_SYNC_PAGES:
            pages += 1
            answer = await self.http.request(
                "GitHub",
                "GET",
                url,
                headers=self._headers(token),
                params=params,
                retry_policy=core.retry_delay,
            )
            if not answer.ok or not isinstance(answer.data, list):
                fetch_error = answer.error or "GitHub answered without a list of issues"
                break
            for item in answer.data:
                await self._sync_one(row, item, result)
            url = core.parse_link_header(answer.headers.get("Link")).get("next")
            params = None  # the next link carries the query
        if url and pages >= MAX_SYNC_PAGES and fetch_error is None:
            result.errors.append({"issue": None, "error": f"stopped after {MAX_SYNC_PAGES} pages"})
        touched = result.created + result.updated
        if fetch_error is not None:
            status = "partial" if touched else "error"
            await self.store.record_sync(row.id, status, fetch_error)
            if not touched:
                return {"ok": False, "error": fetch_error, **_counts(result)}
        else:
            status = "partial" if result.errors else "success"
            error = "; ".join(str(e["error"]) for e in result.errors[:5]) or None
            await self.store.record_sync(row.id, status, error)
        return {"ok": True, **_counts(result)}

    async def _sync_one(self, row: Integration, item: Any, result: SyncResult) -> None:
        number = item.get("number") if isinstance(item, dict) else None
        try:
            issue = core.Issue.from_api(item)
            if issue.is_pull_request:
                result.skipped += 1
                return
            async with self.db.sessions() as session:
                change = await self.upsert_task(session, row, issue, create=True, status="todo")
                await session.commit()
        except (core.PayloadError, GatewayError) as exc:
            result.errors.append({"issue": number, "error": str(exc)})
            return
        except Exception as exc:  # one bad issue must not fail the batch; it is reported
            log.warning("github sync: issue %s failed", number, exc_info=True)
            result.errors.append({"issue": number, "error": type(exc).__name__})
            return
        if change.action == "created":
            result.created += 1
        elif change.action == "updated":
            result.updated += 1
        else:
            result.skipped += 1

    # -- assignment -------------------------------------------------------------------------

    async def linked_user(self, session: AsyncSession, login: str | None) -> User | None:
        if not login:
            return None
        return (
            await session.execute(
                select(User)
                .where(func.lower(User.github_username) == login.lower())
                .order_by(User.id)
                .limit(1)
            )
        ).scalar_one_or_none()

    async def auto_start(self, row: Integration, user: User, task_id: int) -> str:
        """Start the assignee's timer on the task; never stops a running one. Says what it did."""
        if not user.is_active:
            return "not started: the assignee's account is inactive"
        project_id = self.store.config(row).get("default_project_id")
        try:
            await self.app[keys.TIMER].start(user, project_id, task_id)
        except Conflict:
            return "not started: the assignee already has a running timer"
        except BadRequest as exc:
            return f"not started: {exc.message}"
        return "started"


async def prune_deliveries(db: Database, older_than: timedelta = DELIVERY_RETENTION) -> int:
    """Forget handled delivery ids after GitHub's redelivery window has long passed."""
    cutoff = utcnow_naive() - older_than
    async with db.sessions() as session:
        result = await session.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.provider == "github", WebhookDelivery.received_at < cutoff
            )
        )
        await session.commit()
    return int(result.rowcount or 0)


async def find_task(session: AsyncSession, project_id: int, ref: str) -> Task | None:
    return (
        await session.execute(
            select(Task)
            .where(Task.project_id == project_id, Task.external_ref == ref)
            .order_by(Task.id)
            .limit(1)
        )
    ).scalar_one_or_none()


def _counts(result: SyncResult) -> dict[str, Any]:
    return {
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
    }


def _text(body: dict[str, Any], key: str, default: Any) -> str | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", field=key)
    return value.strip() or None
