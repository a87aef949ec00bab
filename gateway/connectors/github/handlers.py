"""GitHub HTTP adapters: the webhook receiver (verify, de-duplicate, route) and on-demand sync."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import keys
from gateway.auth.identity import principal_of, protected
from gateway.connectors.github import core
from gateway.connectors.github.service import TASKS, GitHubConnector, TaskChange, find_task
from gateway.db.models import WebhookDelivery
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, Unauthorized
from gateway.timeutil import utcnow_naive

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
DELIVERIES = WebhookDelivery.__table__
routes = web.RouteTableDef()
router = core.Router()


@dataclass
class Context:
    """What an action handler needs; handlers fill `answer` and may ask for a timer start."""

    connector: GitHubConnector
    session: AsyncSession | None  # None on the PostgreSQL one-statement path
    row: Any  # WebhookIntegration
    delivery: core.Delivery
    driver_conn: Any = None  # that path's asyncpg connection (autocommit)
    delivery_key: str | None = None  # recorded by the one statement on that path
    now: Any = None  # that path's task time, read before its connection was taken
    duplicate: bool = False
    answer: dict[str, Any] = field(default_factory=dict)
    start_timer_for: Any = None  # (User, task_id) to start after the commit

    async def upsert(self, *, create: bool, status: str | None = None) -> TaskChange:
        """The issue's task upsert; on the one-statement path it also records the delivery."""
        if self.session is not None:
            return await self.connector.upsert_task(
                self.session, self.row, self.issue, create=create, status=status
            )
        change = await self.connector.upsert_webhook_task(
            self.driver_conn,
            self.row,
            self.issue,
            self.delivery_key,
            create=create,
            status=status,
            now=self.now,
        )
        if change is None:
            self.duplicate = True
            return TaskChange("duplicate")
        return change

    @property
    def issue(self) -> core.Issue:
        assert self.delivery.issue is not None
        return self.delivery.issue

    def record(self, change: Any) -> None:
        self.answer.update(task=change.action, task_id=change.task_id)
        if change.reason:
            self.answer["reason"] = change.reason


@router.register("issues", "opened")
async def opened(ctx: Context) -> None:
    # A new task starts as todo; an existing one keeps the status people gave it.
    ctx.record(await ctx.upsert(create=True))


@router.register("issues", "reopened")
async def reopened(ctx: Context) -> None:
    ctx.record(await ctx.upsert(create=True, status="todo"))


@router.register("issues", "edited")
@router.register("issues", "labeled")
@router.register("issues", "unlabeled")
async def changed(ctx: Context) -> None:
    # An open issue that was never a task (older than the connector, or newly matching the
    # label filter) becomes one; a closed one only updates an existing task.
    ctx.record(await ctx.upsert(create=ctx.issue.state == "open"))


@router.register("issues", "closed")
async def closed(ctx: Context) -> None:
    ctx.record(await ctx.upsert(create=False, status="done"))


@router.register("issues", "deleted")
async def deleted(ctx: Context) -> None:
    ctx.record(await ctx.upsert(create=False, status="cancelled"))


@router.register("issues", "assigned")
async def assigned(ctx: Context) -> None:
    assert ctx.session is not None
    change = await ctx.upsert(create=ctx.issue.state == "open")
    ctx.record(change)
    if change.task_id is None:
        return
    user = await ctx.connector.linked_user(ctx.session, ctx.delivery.assignee_login)
    if user is None:
        ctx.answer["assignee"] = (
            f"no TimeTracker user has GitHub login {ctx.delivery.assignee_login!r}"
        )
        return
    now = await ctx.connector.task_now(ctx.session)
    conn = await ctx.session.connection()
    await conn.execute(
        update(TASKS)
        .where(TASKS.c.id == change.task_id, TASKS.c.assigned_to.is_distinct_from(user.id))
        .values(assigned_to=user.id, updated_at=now)
    )
    ctx.answer["assigned_to"] = user.id
    if ctx.connector.store.config(ctx.row).get("auto_start_timer"):
        ctx.start_timer_for = (user, change.task_id)
    else:
        ctx.answer["timer"] = "not started: auto-start is off"


@router.register("issues", "unassigned")
async def unassigned(ctx: Context) -> None:
    assert ctx.session is not None
    project_id = ctx.connector.store.config(ctx.row).get("default_project_id")
    task = await find_task(ctx.session, project_id, core.external_ref(ctx.issue.number))
    if task is None:
        ctx.answer.update(task="skipped", reason="no task for this issue")
        return
    user = await ctx.connector.linked_user(ctx.session, ctx.delivery.assignee_login)
    ctx.answer.update(task="unchanged", task_id=task.id)
    if user is not None and task.assigned_to == user.id:
        task.assigned_to = None
        task.updated_at = await ctx.connector.task_now(ctx.session)
        ctx.answer["task"] = "updated"


# Handlers that do more than one task upsert need a session and one transaction around it all.
SESSION_HANDLERS = frozenset({assigned, unassigned})


async def read_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, read from the stream (the app-wide 1 MiB cap is for other routes)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("Payload larger than GitHub's 25 MB limit")
    body = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge("Payload larger than GitHub's 25 MB limit")
    return bytes(body)


SIGNATURE_SHAPE = re.compile(r"sha256=[0-9a-fA-F]{64}")
OFFLOAD_HMAC_BYTES = 1024 * 1024


def integration_id_param(value: str | None) -> int | None:
    """The `?integration=` id, or None without one; 401 for anything but a plain number."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10:
        raise Unauthorized("Unknown integration")
    return int(value)


async def authenticate(
    connector: GitHubConnector,
    driver_conn: Any,
    integration_param: str | None,
    body: bytes,
    signature: str | None,
) -> list[Any]:
    """The integrations this delivery is signed for; verified before anything is parsed.

    The rows are read for every delivery (is_active and the stored secret take effect at once).
    """
    if not signature:
        raise Unauthorized("Missing X-Hub-Signature-256")
    integration_id = integration_id_param(integration_param)
    candidates = await connector.webhook_candidates(driver_conn, integration_id)
    pairs = [(row, connector.webhook_secret(row)) for row in candidates]

    def check() -> list[Any]:
        return [row for row, secret in pairs if core.verify_signature(secret, body, signature)]

    # HMAC of a large body, or against many secrets, runs off the event loop.
    big = len(body) * max(len(pairs), 1) > OFFLOAD_HMAC_BYTES
    verified = await asyncio.to_thread(check) if big else check()
    if not verified:
        raise Unauthorized("Signature does not match" if candidates else "Unknown integration")
    return verified


@routes.post("/api/integrations/github/webhook", name="github_webhook")
async def webhook(request: web.Request) -> web.Response:
    app = request.app
    connector: GitHubConnector = app[keys.CONNECTORS]["github"]  # type: ignore[assignment]
    counter = app[keys.METRICS].webhook_deliveries
    try:
        status, answer = await _handle(request, connector)
    except GatewayError as exc:
        counter.labels("github", "rejected" if exc.status == 401 else "invalid").inc()
        raise
    counter.labels("github", answer.pop("_outcome")).inc()
    return web.json_response(answer, status=status)


Answer = tuple[int, dict[str, Any]]
DUPLICATE: Answer = (200, {"ok": True, "duplicate": True, "_outcome": "duplicate"})


@dataclass(frozen=True)
class Verified:
    """A verified, parsed delivery with its integration and handler, ready to act on."""

    row: Any
    delivery: core.Delivery
    handler: Any
    key: str | None  # the delivery key to record, None when GitHub sent no delivery id


async def _handle(request: web.Request, connector: GitHubConnector) -> Answer:
    # Cheap refusals first: no 25 MB body is read for a request that cannot be signed.
    if not SIGNATURE_SHAPE.fullmatch(request.headers.get("X-Hub-Signature-256", "").strip()):
        raise Unauthorized("Missing or malformed X-Hub-Signature-256")
    integration_id_param(request.query.get("integration"))
    body = await read_body(request)
    if connector.db.is_postgres:
        # The pool's asyncpg connection in autocommit mode. A delivery whose whole effect is
        # one task upsert costs two statements: the integration read, then the
        # gateway_github_task_upsert function (delivery id, advisory lock, lookup, write) as
        # one transaction.
        # The clock is read first: on a settings-cache miss it takes a pooled connection of its
        # own, and a request must never wait for a second connection while it holds one.
        now = await connector.task_now()
        async with connector.db.driver_connection() as conn:
            verified = await _verify(request, connector, body, conn)
            if not isinstance(verified, Verified):
                return verified
            if verified.handler not in SESSION_HANDLERS:
                ctx = Context(
                    connector,
                    None,
                    verified.row,
                    verified.delivery,
                    driver_conn=conn,
                    delivery_key=verified.key,
                    now=now,
                )
                await verified.handler(ctx)
                return DUPLICATE if ctx.duplicate else await _answer(connector, ctx)
        # Released before the session path below: a request never holds two connections.
    else:
        verified = await _verify(request, connector, body, None)
        if not isinstance(verified, Verified):
            return verified
    # One session, one transaction: de-duplication and every change of the handler. On SQLite
    # the writer lock is taken before the first write and held through the commit.
    async with connector.db.sqlite_writer(), connector.db.sessions() as session:
        ctx = Context(connector, session, verified.row, verified.delivery)
        key = verified.key
        if key is not None and not await _first_time(connector, session, key, ctx.row.id):
            return DUPLICATE
        await verified.handler(ctx)
        try:
            await session.commit()
        except IntegrityError:
            # A concurrent redelivery of the same id committed first: its work stands.
            await session.rollback()
            return DUPLICATE
    return await _answer(connector, ctx)


async def _verify(
    request: web.Request, connector: GitHubConnector, body: bytes, driver_conn: Any
) -> Verified | Answer:
    """Authenticate, then parse and route; an Answer when there is nothing to do."""
    rows = await authenticate(
        connector,
        driver_conn,
        request.query.get("integration"),
        body,
        request.headers.get("X-Hub-Signature-256"),
    )
    event = request.headers.get("X-GitHub-Event", "").strip()
    if not event:
        raise BadRequest("Missing X-GitHub-Event")
    delivery_id = request.headers.get("X-GitHub-Delivery")
    try:
        delivery = core.parse_delivery(event, body, delivery_id)
    except core.PayloadError as exc:
        raise BadRequest(f"Malformed payload: {exc}") from None
    if event == "ping":
        return 200, {"ok": True, "pong": True, "_outcome": "ping"}
    handler = router.lookup(event, delivery.action)
    if handler is None or delivery.issue is None:
        ignored = core.ignored_key(event, delivery.action)
        return 202, {"ok": True, "ignored": ignored, "_outcome": "ignored"}
    row = _for_repository(connector, rows, delivery.repo_full_name)
    if row is None:
        return 202, {"ok": True, "ignored": "repository", "_outcome": "ignored"}
    if delivery.issue.is_pull_request:
        return 202, {"ok": True, "ignored": "pull_request", "_outcome": "ignored"}
    return Verified(row, delivery, handler, _delivery_key(delivery_id, row.id))


async def _answer(connector: GitHubConnector, ctx: Context) -> Answer:
    delivery = ctx.delivery
    answer = {"ok": True, "event": core.ignored_key(delivery.event, delivery.action), **ctx.answer}
    if ctx.start_timer_for is not None:
        user, task_id = ctx.start_timer_for
        answer["timer"] = await connector.auto_start(ctx.row, user, task_id)
    return 200, {**answer, "_outcome": "processed"}


def _delivery_key(delivery_id: str | None, integration_id: int) -> str | None:
    """What gateway_webhook_deliveries records: a redelivery is per integration."""
    return f"{delivery_id[:80]}:{integration_id}" if delivery_id else None


async def _first_time(
    connector: GitHubConnector, session: AsyncSession, key: str, integration_id: int
) -> bool:
    """Record the delivery key; False when it was recorded before (a redelivery).

    ON CONFLICT DO NOTHING keeps the transaction usable; a concurrent insert of the same id
    waits for the other transaction and then sees its row.
    """
    dialect_insert = pg_insert if connector.db.is_postgres else sqlite_insert
    statement = (
        dialect_insert(DELIVERIES)
        .values(
            provider="github",
            delivery_id=key,
            integration_id=integration_id,
            received_at=utcnow_naive(),
        )
        .on_conflict_do_nothing(index_elements=["provider", "delivery_id"])
        .returning(DELIVERIES.c.id)
    )
    conn = await session.connection()
    return (await conn.execute(statement)).first() is not None


def _for_repository(connector: GitHubConnector, rows: list[Any], full_name: str | None) -> Any:
    for row in rows:
        config = connector.store.config(row)
        configured = f"{config.get('repo_owner')}/{config.get('repo_name')}".lower()
        if full_name and full_name.lower() == configured:
            return row
    return None


@routes.post("/api/integrations/github/sync", name="github_sync")
@protected("write:integrations", admin=True)
async def sync(request: web.Request) -> web.Response:
    connector: GitHubConnector = request.app[keys.CONNECTORS]["github"]  # type: ignore[assignment]
    result = await connector.sync(principal_of(request))
    return web.json_response(result, status=200 if result["ok"] else 502)
