"""GitHub connector: config, issue→task upserts shared by webhooks and sync, timer auto-start."""

from __future__ import annotations

import json
import logging
import secrets as pysecrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import keys
from gateway.auth.identity import Principal
from gateway.connectors.base import Config, Connector, bool_value
from gateway.connectors.catalog import GITHUB, SECRET_KEYS
from gateway.connectors.github import core
from gateway.db.database import Database, lock_key
from gateway.db.models import Integration, Task, User, WebhookDelivery
from gateway.errors import BadRequest, Conflict, GatewayError
from gateway.logs import truncate_secret
from gateway.timeutil import to_wall, utcnow_naive

log = logging.getLogger(__name__)

TASKS = Task.__table__
INTEGRATIONS = Integration.__table__
TASK_LOCK = "github-task"  # advisory lock namespace of (project, issue)
DELIVERY_RETENTION = timedelta(days=14)
MAX_SYNC_PAGES = 20  # 20 × 50 = 1,000 open issues per sync, a bound on one request's work
API_VERSION = "2022-11-28"


@dataclass
class TaskChange:
    """What an upsert did to the task of one issue."""

    action: str  # created, updated, unchanged, skipped
    task_id: int | None = None
    reason: str | None = None


# What the executors report (see migration 157), and the answer each one gives.
_SKIP_REASONS = {"missing": "no task for this issue", "filtered": "label filter"}


def task_change(outcome: str, task_id: int | None) -> TaskChange:
    if outcome in _SKIP_REASONS:
        return TaskChange("skipped", reason=_SKIP_REASONS[outcome])
    return TaskChange(outcome, task_id)


@dataclass(frozen=True)
class TaskPlan:
    """The values of one task upsert, computed by `GitHubConnector.plan_task`."""

    project_id: int
    external_ref: str
    lock_key: int
    create: bool
    filter_ok: bool
    status: str | None
    name: str
    description: str
    priority: str
    completed_at: datetime | None
    created_by: int
    now: datetime

    def params(
        self, delivery_key: str | None, integration_id: int | None, received_at: datetime | None
    ) -> dict[str, Any]:
        """The arguments of gateway_github_task_upsert, in its order."""
        return {
            "provider": "github",
            "delivery_id": delivery_key,
            "integration_id": integration_id,
            "received_at": received_at,
            "lock_key": self.lock_key,
            "project_id": self.project_id,
            "external_ref": self.external_ref,
            "create": self.create,
            "filter_ok": self.filter_ok,
            "status": self.status,
            "name": self.name,
            "description": self.description,
            "priority": self.priority,
            "completed_at": self.completed_at,
            "created_by": self.created_by,
            "now": self.now,
        }


_ARGS = (
    "provider delivery_id integration_id received_at lock_key project_id external_ref create "
    "filter_ok status name description priority completed_at created_by now"
).split()
# Through SQLAlchemy (inside a session's transaction) and on the raw asyncpg connection.
UPSERT_FUNCTION = text(
    "SELECT outcome, task_id FROM gateway_github_task_upsert(:provider, :delivery_id, "
    ":integration_id, :received_at, :lock_key, :project_id, :external_ref, :create, "
    ":filter_ok, :status, :name, :description, :priority, :completed_at, :created_by, :now)"
)
UPSERT_FUNCTION_DRIVER_SQL = (
    "SELECT outcome, task_id FROM gateway_github_task_upsert("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
)
_CANDIDATES = "SELECT id, user_id, config FROM integrations WHERE provider = $1 AND is_active"
CANDIDATES_SQL = _CANDIDATES + " ORDER BY id"
CANDIDATE_SQL = _CANDIDATES + " AND id = $2"
SECRET_CACHE_SIZE = 256


@dataclass(frozen=True)
class WebhookIntegration:
    """The columns of an integration row the webhook path uses."""

    id: int
    user_id: int
    config: dict[str, Any] | None


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

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._secrets_seen: dict[str, str] = {}

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
        login_given = "github_username" in body
        login = _text(body, "github_username", None)
        if login is not None and not core.validate_owner(login):
            raise BadRequest("Not a valid GitHub login", field="github_username")
        if owner and repo and project_id is not None:
            await self._check_one_repo_per_project(project_id, owner, repo, user.id)
        if login_given:
            await self._link_login(user.id, login)

        row = await self.store.get_or_create(user.id)

        values = {
            "repo_owner": owner,
            "repo_name": repo,
            "default_project_id": project_id,
            "auto_start_timer": auto_start,
            "label_filter": label_filter,
            "priority_labels": priority_labels,
        }
        # Only the keys this save names are written, onto the config read under the row lock:
        # a concurrent save of other keys (or a first save on a new row) is never undone.
        given = {k: v for k, v in values.items() if k in body or existing is None}

        def mutate(r: Integration, config: Config) -> str | None:
            for key, value in given.items():
                config.set(key, value)
            if token and token.strip():  # blank or absent: keep the stored token
                config.set_secret("github_token", token.strip())
            generated = None
            if pasted_secret and pasted_secret.strip():
                config.set_secret("webhook_secret", pasted_secret.strip())
            elif regenerate or not config.has("webhook_secret"):
                generated = pysecrets.token_urlsafe(32)
                config.set_secret("webhook_secret", generated)
            r.is_active = bool(
                config.get("repo_owner")
                and config.get("repo_name")
                and config.get("default_project_id") is not None
                and config.has("webhook_secret")
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

    async def _link_login(self, user_id: int, login: str | None) -> None:
        """users.github_username: the join key that assignment uses to find the assignee.

        A login belongs to one user: otherwise anyone could receive another's assignments.
        """
        async with self.db.sessions() as session:
            if login is not None:
                taken = (
                    await session.execute(
                        select(User.id).where(
                            func.lower(User.github_username) == login.lower(), User.id != user_id
                        )
                    )
                ).first()
                if taken is not None:
                    raise BadRequest(
                        "This GitHub login is linked to another user", field="github_username"
                    )
            await session.execute(
                update(User).where(User.id == user_id).values(github_username=login)
            )
            await session.commit()

    async def status(self, principal: Principal) -> dict[str, Any]:
        body = await super().status(principal)
        body["github_username"] = principal.user.github_username  # loaded for this request
        return body

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
                    f"Project {project_id} already receives issues from another repository; "
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
        row = await self.store.require_active(principal.user.id)  # 409 if missing or inactive
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

    def plan_task(
        self,
        row: Any,
        issue: core.Issue,
        *,
        create: bool,
        status: str | None,
        now: datetime,
    ) -> TaskPlan:
        """Everything an upsert of the issue's task may write, decided here and only here.

        Both executors (Python below for SQLite, the `gateway_github_task_upsert` function of
        migration 157 on PostgreSQL) only look the task up under the lock and write these values.
        """
        config = self.store.config(row)
        project_id = config.get("default_project_id")
        ref = core.external_ref(issue.number)
        return TaskPlan(
            project_id=project_id,
            external_ref=ref,
            lock_key=lock_key(TASK_LOCK, project_id, ref),
            create=create,
            filter_ok=core.matches_label_filter(issue.labels, config.get("label_filter")),
            status=status,
            name=core.task_name(issue),
            description=core.task_description(issue),
            priority=core.priority_for(issue.labels, config.get("priority_labels") or {}),
            completed_at=now if status == "done" else None,
            created_by=row.user_id,
            now=now,
        )

    async def task_now(self, session: AsyncSession | None = None) -> datetime:
        """Now as wall time in the app's time zone (how TimeTracker stores task times)."""
        app_tz, _ = await self.db.app_settings(session)
        return to_wall(self.app[keys.TIMER].clock(), app_tz)

    async def upsert_task(
        self,
        session: AsyncSession,
        row: Any,
        issue: core.Issue,
        *,
        create: bool,
        status: str | None = None,
    ) -> TaskChange:
        """Create or update the task of an issue in the integration's project.

        Serialised per (project, issue) so that `opened` and `assigned` arriving together, or a
        webhook racing a sync, make one task. The caller commits.
        """
        plan = self.plan_task(
            row, issue, create=create, status=status, now=await self.task_now(session)
        )
        if self.db.is_postgres:
            # The same function the webhook hot path calls, here inside the caller's transaction.
            result = await session.execute(UPSERT_FUNCTION, plan.params(None, None, None))
            outcome, task_id = result.one()
            return task_change(outcome, task_id)
        async with self.db.xact_lock(session, TASK_LOCK, plan.project_id, plan.external_ref):
            outcome, task_id = await _upsert_in_python(await session.connection(), plan)
        return task_change(outcome, task_id)

    async def upsert_webhook_task(
        self,
        conn: Any,
        row: Any,
        issue: core.Issue,
        delivery_key: str | None,
        *,
        create: bool,
        status: str | None,
        now: datetime,
    ) -> TaskChange | None:
        """PostgreSQL hot path: record the delivery and upsert the task in one round trip.

        `conn` is the pool's asyncpg connection in autocommit mode, so the function's statement
        is one transaction (the advisory lock ends with it). None for an already seen delivery.
        """
        plan = self.plan_task(row, issue, create=create, status=status, now=now)
        outcome, task_id = await conn.fetchrow(
            UPSERT_FUNCTION_DRIVER_SQL,
            *_positional(plan.params(delivery_key, row.id, utcnow_naive())),
        )
        return None if outcome == "duplicate" else task_change(outcome, task_id)

    async def webhook_candidates(self, conn: Any, integration_id: int | None) -> list[Any]:
        """Active GitHub integrations (one, with an id): read on every delivery, never cached."""
        if conn is not None:  # PostgreSQL: the driver connection, one autocommit SELECT
            if integration_id is None:
                records = await conn.fetch(CANDIDATES_SQL, self.provider)
            else:
                records = await conn.fetch(CANDIDATE_SQL, self.provider, integration_id)
            return [WebhookIntegration(r[0], r[1], _json(r[2])) for r in records]
        query = select(INTEGRATIONS.c.id, INTEGRATIONS.c.user_id, INTEGRATIONS.c.config).where(
            INTEGRATIONS.c.provider == self.provider, INTEGRATIONS.c.is_active.is_(True)
        )
        if integration_id is not None:
            query = query.where(INTEGRATIONS.c.id == integration_id)
        async with self.db.sessions() as session:
            rows = (await session.execute(query.order_by(INTEGRATIONS.c.id))).all()
        return [WebhookIntegration(*r) for r in rows]

    def webhook_secret(self, row: Any) -> str:
        """The integration's webhook secret in plain text ("" when it has none).

        Decryptions are remembered by the stored ciphertext itself: the row is read on every
        delivery, so a regenerated secret (a new ciphertext) or a removed one takes effect at
        once; only the repeated Fernet decryption of an unchanged value is skipped.
        """
        stored = (row.config or {}).get("webhook_secret")
        if not stored:
            return ""
        plain = self._secrets_seen.get(stored)
        if plain is None:
            plain = self.store.config(row).secret("webhook_secret") or ""
            if len(self._secrets_seen) >= SECRET_CACHE_SIZE:
                self._secrets_seen.clear()
            self._secrets_seen[stored] = plain
        return plain

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
            if url and not url.startswith(self.settings.github_api_url + "/"):
                # The token goes only to the configured API, whatever a Link header says.
                fetch_error = "GitHub's next-page link points outside GITHUB_API_URL"
                break
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
            async with self.db.sqlite_writer(), self.db.sessions() as session:
                # Existing tasks keep their status (in_progress, review, done set in TimeTracker).
                change = await self.upsert_task(session, row, issue, create=True)
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


async def _upsert_in_python(conn: Any, plan: TaskPlan) -> tuple[str, int | None]:
    """SQLite's executor of a TaskPlan; the caller holds the lock. Mirrors migration 157."""
    current = (
        await conn.execute(
            select(TASKS.c.id, TASKS.c.name, TASKS.c.description, TASKS.c.priority, TASKS.c.status)
            .where(TASKS.c.project_id == plan.project_id, TASKS.c.external_ref == plan.external_ref)
            .order_by(TASKS.c.id)
            .limit(1)
        )
    ).first()
    fields: dict[str, Any] = {
        "name": plan.name,
        "description": plan.description,
        "priority": plan.priority,
    }
    if current is None:
        if not plan.create:
            return "missing", None
        if not plan.filter_ok:
            return "filtered", None
        task_id = (
            await conn.execute(
                insert(TASKS)
                .values(
                    project_id=plan.project_id,
                    status=plan.status or "todo",
                    created_by=plan.created_by,
                    created_at=plan.now,
                    updated_at=plan.now,
                    completed_at=plan.completed_at,
                    external_ref=plan.external_ref,
                    **fields,
                )
                .returning(TASKS.c.id)
            )
        ).scalar_one()
        return "created", task_id
    if plan.status is not None and current.status != plan.status:
        fields.update(status=plan.status, completed_at=plan.completed_at)
    if all(getattr(current, k) == v for k, v in fields.items() if k != "completed_at"):
        return "unchanged", current.id
    await conn.execute(
        update(TASKS).where(TASKS.c.id == current.id).values(updated_at=plan.now, **fields)
    )
    return "updated", current.id


def _positional(params: dict[str, Any]) -> list[Any]:
    return [params[name] for name in _ARGS]


def _json(value: Any) -> Any:
    """A json/jsonb value from the driver: decoded by SQLAlchemy's codec, or still text."""
    return json.loads(value) if isinstance(value, str | bytes) else value


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
