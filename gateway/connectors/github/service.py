"""GitHub connector: config fields, the webhook receiver's SQL and routing, sync, auto-start."""

from __future__ import annotations

import json
import logging
import secrets as pysecrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.connectors import fields as f
from gateway.connectors.base import CheckResult, Config, Connector, ConnectorDeps, SaveContext
from gateway.connectors.catalog import GITHUB
from gateway.connectors.github import actions, core
from gateway.connectors.github.tasks import TaskChange, executor_for, plan_task
from gateway.connectors.http import HttpResult
from gateway.connectors.jobs import IntegrationJobRunner, SyncOutcome
from gateway.connectors.webhooks import Answer, Candidate, Delivery, Routed, delivery_key
from gateway.db.models import Integration, Project, User
from gateway.errors import BadRequest, Conflict, GatewayError, Unauthorized
from gateway.timeutil import to_wall, utcnow_naive

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
MAX_SYNC_PAGES = 20  # 20 × 50 = 1,000 open issues per sync, a bound on one request's work
API_VERSION = "2022-11-28"
TOKEN_PAGE = "https://github.com/settings/personal-access-tokens/new"  # noqa: S105 (a URL)

FIELDS = f.FieldTable(
    [
        f.Field("github_token", f.secret(), secret=True),
        f.Field(
            "webhook_secret", f.secret(min_length=8), secret=True, required=True,
        ),
        f.Field(
            "repo_owner",
            f.checked(f.text(100), core.validate_owner, "not a valid GitHub owner name"),
            required=True,
        ),
        f.Field(
            "repo_name",
            f.checked(f.text(100), core.validate_repo, "not a valid GitHub repository name"),
            required=True,
        ),
        f.Field(
            "default_project_id", f.optional_id, required=True, project=True
        ),
        f.Field("auto_start_timer", f.boolean, default=False),
        f.Field("label_filter", core.normalize_label_filter),
        f.Field("priority_labels", core.normalize_priority_labels, default={}),
    ]
)

_CANDIDATES_SQL = (
    "SELECT i.id, i.user_id, i.config, u.is_active, p.status FROM integrations AS i "
    "JOIN users AS u ON u.id = i.user_id "
    "LEFT JOIN projects AS p ON p.id = CASE WHEN (i.config->>'default_project_id') ~ "
    "'^[0-9]{1,9}$' THEN (i.config->>'default_project_id')::integer END "
    "WHERE i.provider = $1 AND i.is_active"
)
CANDIDATES_SQL = _CANDIDATES_SQL + " ORDER BY i.id"
CANDIDATE_SQL = _CANDIDATES_SQL + " AND i.id = $2"


class GitHubConnector(Connector):
    slug = "github"
    provider = GITHUB
    name = "GitHub"
    fields = FIELDS
    max_body = MAX_BODY_BYTES

    def __init__(self, deps: ConnectorDeps, runner: IntegrationJobRunner) -> None:
        super().__init__(deps)
        self.runner = runner
        self.tasks = executor_for(self.db)

    # -- status -------------------------------------------------------------------------------

    def webhook_url(self, row: Integration | None) -> str:
        url = self.settings.public("/api/integrations/github/webhook")
        return f"{url}?integration={row.id}" if row is not None else url

    def is_connected(self, row: Integration, config: Config) -> bool:
        return bool(row.is_active and config.has("webhook_secret"))

    async def status_extra(
        self, user: User, row: Integration | None, config: Config
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "webhook_url": self.webhook_url(row),
            "github_username": user.github_username,
            "content_types": ["application/json", "application/x-www-form-urlencoded"],
        }
        return extra

    # -- config -------------------------------------------------------------------------------

    async def validate(self, ctx: SaveContext, session: AsyncSession) -> None:
        body = ctx.body
        if "repository" in body and body["repository"] not in (None, ""):
            try:
                owner, repo = core.split_repository(body["repository"])
            except ValueError as exc:
                raise BadRequest(str(exc), field="repository") from None
            ctx.plain.update(repo_owner=owner, repo_name=repo)
        if "github_username" in body:
            await self._link_login(session, ctx.user.id, body["github_username"])
        project_id = ctx.value("default_project_id")
        owner, repo = ctx.value("repo_owner"), ctx.value("repo_name")
        if project_id is not None and owner and repo:
            await self._check_one_repo_per_project(session, project_id, owner, repo, ctx.user.id)

    def before_commit(self, ctx: SaveContext, row: Integration, config: Config) -> None:
        # DESIGN §10: "generate_webhook_secret": true, or the first save of an integration
        # that has no secret and was given none, generates one (that answer alone carries it).
        # Later, with no secret stored (e.g. after a disconnect), only the save that completes
        # the other required fields makes one: an unrelated edit never reconnects silently.
        if _flag(ctx.body, "generate_webhook_secret"):
            generate = True
        elif config.has("webhook_secret"):
            generate = False
        else:
            before = [k for k in self.table.missing(ctx.current.raw, ctx.current.has)
                      if k != "webhook_secret"]
            after = self.table.missing(config.raw, config.has)
            first_save = not ctx.current.raw
            generate = first_save or (bool(before) and after == ["webhook_secret"])
        if generate:
            generated = pysecrets.token_urlsafe(32)
            config.set_secret("webhook_secret", generated)
            ctx.answer["webhook_secret"] = generated  # shown once, to paste into GitHub

    def activation_missing(self, config: Config) -> list[str]:
        missing = self.table.missing(config.raw, config.has)
        # The secret is generated as soon as the rest is there: not the user's to supply.
        return missing if missing == ["webhook_secret"] else [
            key for key in missing if key != "webhook_secret"
        ]

    async def _link_login(self, session: AsyncSession, user_id: int, raw: Any) -> None:
        """users.github_username: the join key that assignment uses to find the assignee.

        A login belongs to one user: otherwise anyone could receive another's assignments.
        """
        try:
            login = f.text(100)(raw)
        except ValueError as exc:
            raise BadRequest(f"github_username: {exc}", field="github_username") from None
        if login is not None and not core.validate_owner(login):
            raise BadRequest("Not a valid GitHub login", field="github_username")
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
        await session.execute(update(User).where(User.id == user_id).values(github_username=login))

    async def _check_one_repo_per_project(
        self, session: AsyncSession, project_id: int, owner: str, repo: str, user_id: int
    ) -> None:
        """external_ref holds only the issue number: two repos in one project would collide.

        Under a lock per project, so two users saving the same project at once cannot both pass.
        """
        async with self.db.xact_lock(session, "github-project-repo", project_id):
            wanted = f"{owner}/{repo}".lower()
            rows = (
                await session.execute(
                    select(Integration).where(
                        Integration.provider == self.provider,
                        Integration.is_active.is_(True),
                        Integration.user_id != user_id,
                    )
                )
            ).scalars()
            for other in rows:
                config = self.store.config(other)
                if config.get("default_project_id") != project_id:
                    continue
                theirs = f"{config.get('repo_owner')}/{config.get('repo_name')}"
                if theirs.lower() != wanted:
                    project = await session.get(Project, project_id)
                    name = project.name if project else f"#{project_id}"
                    raise BadRequest(
                        f"Project {name} already receives issues from {theirs}: another "
                        "repository feeds it. Choose another project (one repository per project).",
                        field="default_project_id",
                    )

    # -- test -------------------------------------------------------------------------------

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }

    async def check_connection(self, row: Integration, config: Config) -> CheckResult:
        token = config.secret("github_token")
        if not token:
            raise BadRequest("Save a GitHub token first", field="github_token")
        result = await self.http.request(
            "GitHub",
            "GET",
            f"{self.settings.github_api_url}/user",
            headers=self._headers(token),
            retry_policy=core.retry_delay,
        )
        if result.ok and isinstance(result.data, dict) and isinstance(result.data.get("login"), str):
            return CheckResult(True, connected_as=result.data["login"], extra={"login": result.data["login"]})
        return explain(result)

    # -- webhook receiver (gateway/connectors/webhooks.py) ------------------------------------

    @property
    def autocommit_fast_path(self) -> bool:
        return self.tasks.atomic_claims

    async def prepare(self) -> datetime:
        """The task clock, read before the pipeline takes its connection (app settings may
        need a pooled connection of their own on a cache miss)."""
        return await self.task_now()

    def precheck(self, headers: Mapping[str, str], query: Mapping[str, str]) -> int | None:
        # Cheap refusals first: no 25 MB body is read for a request that cannot be signed.
        if not core.signature_shape_ok(headers):
            raise Unauthorized("Missing or malformed X-Hub-Signature-256")
        try:
            return core.integration_id_param(query.get("integration"))
        except ValueError:
            raise Unauthorized("Unknown integration") from None

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
        return core.verify_signature(secret, body, headers.get("X-Hub-Signature-256"))

    def parse(self, headers: Mapping[str, str], body: bytes) -> core.Delivery:
        return core.from_http(headers, body)

    async def candidates(self, integration_id: int | None, conn: Any) -> list[Candidate]:
        """Active GitHub integrations (one, with an id): read on every delivery, never cached."""
        if conn is not None:  # an autocommit driver connection: one SELECT
            if integration_id is None:
                records = await conn.fetch(CANDIDATES_SQL, self.provider)
            else:
                records = await conn.fetch(CANDIDATE_SQL, self.provider, integration_id)
            rows = [(r[0], r[1], _json(r[2]), r[3], r[4]) for r in records]
        else:
            query = (
                select(
                    Integration.id,
                    Integration.user_id,
                    Integration.config,
                    User.is_active,
                    Project.status,
                )
                .join(User, User.id == Integration.user_id)
                .outerjoin(
                    Project, Project.id == Integration.config["default_project_id"].as_integer()
                )
                .where(Integration.provider == self.provider, Integration.is_active.is_(True))
                .order_by(Integration.id)
            )
            if integration_id is not None:
                query = query.where(Integration.id == integration_id)
            async with self.db.sessions() as session:
                rows = [tuple(r) for r in (await session.execute(query)).all()]
        return [
            Candidate(
                id=rid,
                user_id=uid,
                config=config or {},
                stored_secret=(config or {}).get("webhook_secret"),
                extra={"owner_active": bool(active), "project_status": status},
            )
            for rid, uid, config, active, status in rows
        ]

    async def route(self, event: core.Delivery, verified: Sequence[Candidate]) -> Routed | Answer:
        if event.event == "ping":
            return Answer(200, {"ok": True, "pong": True}, "ping")
        handler = actions.router.lookup(event.event, event.action)
        if handler is None or event.issue is None:
            return _ignored(core.ignored_key(event.event, event.action))
        candidate = _for_repository(verified, event.repo_full_name)
        if candidate is None:
            return _ignored("repository")
        if event.issue.is_pull_request:
            return _ignored("pull_request")
        if not candidate.extra.get("owner_active"):
            return _ignored("owner_inactive", "the integration's owner is inactive in TimeTracker")
        status = candidate.extra.get("project_status")
        if status != "active":
            reason = f"the integration's project is {status or 'missing'}"
            return _ignored("project_inactive", reason)
        key = delivery_key(event.delivery_id, candidate.id)
        single = handler in actions.SINGLE_WRITE
        return Routed(
            candidate,
            lambda d: handler(self, d),
            key,
            claims_itself=single and self.tasks.atomic_claims,
        )

    def answer(self, delivery: Delivery) -> Answer:
        event: core.Delivery = delivery.event
        body = {"ok": True, "event": core.ignored_key(event.event, event.action), **delivery.answer}
        return Answer(200, body, "processed")

    # -- tasks ------------------------------------------------------------------------------

    async def task_now(self, session: AsyncSession | None = None) -> datetime:
        """Now as wall time in the app's time zone (how TimeTracker stores task times)."""
        app_tz, _ = await self.db.app_settings(session)
        return to_wall(self.clock(), app_tz)

    async def upsert(
        self, delivery: Delivery, *, create: bool, status: str | None = None
    ) -> TaskChange:
        """The delivery's issue task: in the pipeline's transaction, or claiming the key itself."""
        issue = delivery.event.issue
        candidate = delivery.candidate
        if delivery.conn is not None:
            # `prepared` is the task clock, read by prepare() before the connection was taken.
            plan = plan_task(
                candidate.config, candidate.user_id, issue, create=create, status=status,
                now=delivery.prepared,
            )
            change = await self.tasks.claiming(
                delivery.conn, plan, delivery.key, candidate.id, utcnow_naive()
            )
            if change is None:
                delivery.duplicate = True
                return TaskChange("duplicate")
            return change
        assert delivery.session is not None
        return await self.upsert_in(
            delivery.session, candidate.config, candidate.user_id, issue, create=create,
            status=status,
        )

    async def upsert_in(
        self,
        session: AsyncSession,
        config: Any,
        created_by: int,
        issue: core.Issue,
        *,
        create: bool,
        status: str | None = None,
    ) -> TaskChange:
        plan = plan_task(
            config, created_by, issue, create=create, status=status,
            now=await self.task_now(session),
        )
        return await self.tasks.in_session(session, plan)

    # -- sync -------------------------------------------------------------------------------

    async def sync(self, user: User) -> tuple[int, dict[str, Any]]:
        """Pull open issues now (admin); (HTTP status, answer)."""
        row = await self.store.require_active(user.id)
        if not self.store.config(row).secret("github_token"):
            raise BadRequest("Save a GitHub token first", field="github_token")
        outcome = await self.runner.run_one(self, row, self._sync_work)
        counts = outcome.detail.get("counts") or {
            "created": 0, "updated": 0, "skipped": 0, "errors": []
        }
        if outcome.status == "error":
            return 502, {"ok": False, "error": outcome.error, **counts}
        return 200, {"ok": True, **counts}

    async def _sync_work(self, row: Integration) -> SyncOutcome:
        config = self.store.config(row)
        token = config.secret("github_token") or ""
        url: str | None = (
            f"{self.settings.github_api_url}/repos/{config.get('repo_owner')}/"
            f"{config.get('repo_name')}/issues"
        )
        params: dict[str, str] | None = {"state": "open", "per_page": "50"}
        counts: dict[str, Any] = {"created": 0, "updated": 0, "skipped": 0, "errors": []}
        pages = 0
        fetch_error: str | None = None
        while url and pages < MAX_SYNC_PAGES:
            pages += 1
            answer = await self.http.request(
                "GitHub", "GET", url, headers=self._headers(token), params=params,
                retry_policy=core.retry_delay,
            )
            if not answer.ok or not isinstance(answer.data, list):
                fetch_error = explain(answer).error or "GitHub answered without a list of issues"
                break
            for item in answer.data:
                await self._sync_one(row, config, item, counts)
            url = core.parse_link_header(answer.headers.get("Link")).get("next")
            params = None  # the next link carries the query
            if url and not url.startswith(self.settings.github_api_url + "/"):
                # The token goes only to the configured API, whatever a Link header says.
                fetch_error = "GitHub's next-page link points outside GITHUB_API_URL"
                break
        if url and pages >= MAX_SYNC_PAGES and fetch_error is None:
            counts["errors"].append({"issue": None, "error": f"stopped after {MAX_SYNC_PAGES} pages"})
        return SyncOutcome.from_counts(
            counts["created"] + counts["updated"],
            [str(e["error"]) for e in counts["errors"]],
            fetch_error,
            counts=counts,
        )

    async def _sync_one(
        self, row: Integration, config: Config, item: Any, counts: dict[str, Any]
    ) -> None:
        number = item.get("number") if isinstance(item, dict) else None
        try:
            issue = core.Issue.from_api(item)
            if issue.is_pull_request:
                counts["skipped"] += 1
                return
            async with self.db.write_transaction() as session:
                # Existing tasks keep their status (in_progress, review, done set in TimeTracker).
                change = await self.upsert_in(session, config, row.user_id, issue, create=True)
                await session.commit()
        except (core.PayloadError, GatewayError) as exc:
            counts["errors"].append({"issue": number, "error": str(exc)})
            return
        except Exception as exc:  # one bad issue must not fail the batch; it is reported
            log.warning("github sync: issue %s failed", number, exc_info=True)
            counts["errors"].append({"issue": number, "error": type(exc).__name__})
            return
        key = change.action if change.action in ("created", "updated") else "skipped"
        counts[key] += 1

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

    async def auto_start(self, config: Any, user: User, task_id: int) -> str:
        """Start the assignee's timer on the task; never stops a running one. Says what it did."""
        if not user.is_active:
            return "not started: the assignee's account is inactive"
        try:
            await self.timer.start(user, config.get("default_project_id"), task_id)
        except Conflict:
            return "not started: the assignee already has a running timer"
        except BadRequest as exc:
            return f"not started: {exc.message}"
        return "started"


def explain(result: HttpResult) -> CheckResult:
    """A failed GitHub call as a sentence with a next step, and a code the card can key on."""
    if result.status is None:
        return CheckResult(
            False,
            error="GitHub could not be reached (network or timeout). It is safe to try again.",
            code="network",
        )
    said = result.data.get("message") if isinstance(result.data, dict) else None
    said = f" ({str(said)[:100]})" if said else ""
    if result.status == 401:
        return CheckResult(
            False,
            error=f"GitHub rejected the token{said}: create a new one with read access to "
            f"Issues ({TOKEN_PAGE}) and save it.",
            code="bad_token",
        )
    if result.status in (403, 429) and "rate limit" in (result.error or "").lower():
        return CheckResult(
            False, error="GitHub's rate limit is reached: try again later.", code="rate_limited"
        )
    if result.status == 403:
        return CheckResult(
            False,
            error="GitHub refused access: the token lacks read access to Issues of this "
            "repository.",
            code="forbidden",
        )
    if result.status == 404:
        return CheckResult(
            False,
            error="GitHub does not show this repository to the token: check owner/repo and "
            "the token's repository access.",
            code="not_found",
        )
    return CheckResult(
        False, error=result.error or f"GitHub answered HTTP {result.status}", code="provider"
    )


def _ignored(what: str, reason: str | None = None) -> Answer:
    body: dict[str, Any] = {"ok": True, "ignored": what}
    if reason:
        body["reason"] = reason
    return Answer(202, body, "ignored")


def _for_repository(candidates: Sequence[Candidate], full_name: str | None) -> Candidate | None:
    """The verified integration configured for the delivery's repository (case-insensitive)."""
    if not full_name:
        return None
    wanted = full_name.lower()
    for candidate in candidates:
        owner = candidate.config.get("repo_owner")
        name = candidate.config.get("repo_name")
        if owner and name and f"{owner}/{name}".lower() == wanted:
            return candidate
    return None


def _flag(body: Mapping[str, Any], key: str) -> bool:
    if key not in body:
        return False
    try:
        return f.boolean(body[key])
    except ValueError:
        raise BadRequest(f"{key} must be true or false", field=key) from None


def _json(value: Any) -> Any:
    """A json/jsonb value from the driver: decoded by SQLAlchemy's codec, or still text."""
    return json.loads(value) if isinstance(value, str | bytes) else value
