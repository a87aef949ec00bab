"""Slack connector: config fields, the signed receiver, notifications, daily summary, test."""

from __future__ import annotations

import json
import logging
import time as pytime
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.connectors import fields as f
from gateway.connectors.base import CheckResult, Config, Connector, ConnectorDeps, SaveContext
from gateway.connectors.catalog import SLACK
from gateway.connectors.http import HttpResult
from gateway.connectors.jobs import IntegrationJobRunner, SyncOutcome
from gateway.connectors.slack import actions, core
from gateway.connectors.webhooks import (
    Answer,
    Candidate,
    Delivery,
    Routed,
    delivery_key,
)
from gateway.db.models import Integration, User
from gateway.errors import BadRequest, Unauthorized
from gateway.events import EventBus
from gateway.outbox import STARTED, PermanentFailure, RetryLater, TimerEventRecord
from gateway.scheduler import JobReport
from gateway.timeutil import zone

log = logging.getLogger(__name__)

SUMMARY_JOB = "slack_daily_summary"
SUMMARY_SPEC = "*/30 * * * *"  # core.SUMMARY_WINDOW: each local day is due in exactly one run
SUMMARY_DAY_KEY = "last_summary_day"  # config: the local day whose summary was claimed
# config: while a claimed summary is being posted, when it was claimed (naive UTC ISO). Gone
# once posted (or given up); still there after a replica died mid-post, so a later run, or
# another replica, posts the summary after all (claims older than STALE_CLAIM_LIMIT are dropped).
SUMMARY_CLAIMED_AT_KEY = "summary_claimed_at"
STALE_CLAIM_LIMIT = timedelta(hours=6)
TEAM_KEY = "team_id"  # config: the workspace seen by the last successful test
RESPOND_EVENT = "slack.respond"  # EventBus: a reply to a response_url, off the request path
RESPONSE_URL_HOSTS = ("hooks.slack.com",)
# The receiver's candidates (webhooks.Receiver.candidates) on an autocommit driver connection.
CANDIDATES_SQL = (
    "SELECT i.id, i.user_id, i.config->>'signing_secret', i.config->>'linked_slack_user_id', "
    "i.config->>'team_id', u.is_active, u.slack_user_id FROM integrations AS i "
    "JOIN users AS u ON u.id = i.user_id WHERE i.provider = $1 AND i.is_active ORDER BY i.id"
)

FIELDS = f.FieldTable(
    [
        f.Field(
            "bot_token", core.normalize_bot_token, secret=True, required=True
        ),
        f.Field(
            "signing_secret",
            core.normalize_signing_secret,
            secret=True,
            required=True,
        ),
        f.Field("channel_id", core.normalize_channel_id),
        f.Field("notify_on_start", f.boolean, default=True),
        f.Field("notify_on_stop", f.boolean, default=True),
        f.Field("daily_summary", f.boolean, default=False),
        f.Field(
            "daily_summary_time",
            core.normalize_hhmm,
            default=core.DEFAULT_SUMMARY_TIME,
        ),
        f.Field("linked_slack_user_id", core.normalize_slack_user_id),
    ]
)


class SlackConnector(Connector):
    slug = "slack"
    provider = SLACK
    name = "Slack"
    fields = FIELDS
    max_body = core.MAX_BODY_BYTES

    def __init__(
        self,
        deps: ConnectorDeps,
        runner: IntegrationJobRunner,
        events: EventBus | None = None,
        wall_clock: Any = pytime.time,
    ) -> None:
        super().__init__(deps)
        self.runner = runner
        self.events = events
        self.wall_clock = wall_clock
        # How long a summary claim protects a post under way (GATEWAY_EVENT_LEASE, as events).
        self.claim_lease = timedelta(seconds=deps.settings.event_lease)
        if events is not None:
            events.subscribe(RESPOND_EVENT, self._respond)

    def option(self, config: Config | Mapping[str, Any], key: str) -> Any:
        """A plain config value, or its field's default when it was never saved."""
        value = config.get(key)
        return self.table.by_name[key].default if value is None else value

    def api_url(self, method: str) -> str:
        return f"{self.settings.slack_api_url}/{method}"

    # -- status -------------------------------------------------------------------------------

    def events_url(self) -> str:
        return self.settings.public("/api/integrations/slack/events")

    def is_connected(self, row: Integration, config: Config) -> bool:
        return bool(row.is_active and config.has("bot_token") and config.has("signing_secret"))

    async def status_extra(
        self, user: User, row: Integration | None, config: Config
    ) -> dict[str, Any]:
        url = self.events_url()
        try:
            manifest: dict[str, Any] | None = core.app_manifest(url)
        except ValueError:  # GATEWAY_PUBLIC_URL is not http(s): nothing to paste into Slack
            manifest = None
        return {
            "events_url": url,
            "manifest": manifest,
            "manifest_json": json.dumps(manifest, indent=2, ensure_ascii=False)
            if manifest
            else None,
        }

    # -- config -------------------------------------------------------------------------------

    async def validate(self, ctx: SaveContext, session: AsyncSession) -> None:
        """A Slack member ID drives one TimeTracker user: refuse a second link to it."""
        linked = ctx.value("linked_slack_user_id")
        if not linked or "linked_slack_user_id" not in ctx.plain:
            return
        async with self.db.xact_lock(session, "slack-link", linked):
            rows = (
                await session.execute(
                    select(Integration).where(
                        Integration.provider == self.provider,
                        Integration.user_id != ctx.user.id,
                    )
                )
            ).scalars()
            for other in rows:
                if (other.config or {}).get("linked_slack_user_id") == linked:
                    raise BadRequest(
                        "This Slack member ID is linked to another TimeTracker user",
                        field="linked_slack_user_id",
                    )
            taken = (
                await session.execute(
                    select(User.id).where(User.slack_user_id == linked, User.id != ctx.user.id)
                )
            ).first()
            if taken is not None:
                raise BadRequest(
                    "This Slack member ID is linked to another TimeTracker user",
                    field="linked_slack_user_id",
                )

    def on_disconnect(self, config: Config) -> None:
        config.raw.pop(TEAM_KEY, None)

    # -- Web API --------------------------------------------------------------------------------

    async def call(
        self, method: str, token: str, body: Mapping[str, Any] | None = None, *, retries: int = 0
    ) -> HttpResult:
        """One Web API call (POST, JSON); no inline retries unless asked: callers retry later."""
        return await self.http.request(
            "Slack",
            "POST",
            self.api_url(method),
            headers={"Authorization": f"Bearer {token}"},
            json_body=dict(body or {}),
            retry_policy=core.retry_delay,
            retries=retries,
        )

    def outcome(self, result: HttpResult, channel: str | None = None) -> core.ApiOutcome:
        return core.interpret_api_answer(
            result.status, result.headers, result.data, channel=channel, now=self.wall_clock()
        )

    async def post(self, config: Config, message: Mapping[str, Any]) -> core.ApiOutcome:
        channel = config.get("channel_id")
        token = config.secret("bot_token") or ""
        result = await self.call("chat.postMessage", token, {"channel": channel, **message})
        return self.outcome(result, channel)

    # -- test -----------------------------------------------------------------------------------

    async def check_connection(self, row: Integration, config: Config) -> CheckResult:
        token = config.secret("bot_token")
        if not token:
            raise BadRequest("Save a bot token first", field="bot_token")
        result = await self.call("auth.test", token)  # a rate limit is reported, not waited out
        answer = self.outcome(result)
        if not answer.ok:
            return CheckResult(False, error=answer.message, code=answer.error_code or "provider")
        data = result.data if isinstance(result.data, dict) else {}
        who = data.get("user") if isinstance(data.get("user"), str) else None
        team = data.get("team_id") if isinstance(data.get("team_id"), str) else None
        extra: dict[str, Any] = {"team_id": team, "team": data.get("team")}
        if team:

            async def remember(_row: Integration, cfg: Config, _s: AsyncSession) -> None:
                cfg.set(TEAM_KEY, team)

            await self.store.update(row.id, remember)
        channel = config.get("channel_id")
        if channel:
            async with self.db.sessions() as session:
                user = await session.get(User, row.user_id)
            name = user.display_name if user else "someone"
            posted = await self.post(config, core.connection_test_message(name))
            if not posted.ok:
                return CheckResult(
                    False, error=posted.message, code=posted.error_code or "provider", extra=extra
                )
            extra["test_message"] = "posted"
        return CheckResult(True, connected_as=who, extra=extra)

    # -- the receiver (gateway/connectors/webhooks.py) -------------------------------------------

    def precheck(self, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        # Slack signs every request, ssl_check included (DESIGN §10); stale ones cost no read.
        if not core.signature_shape_ok(headers, now=self.wall_clock()):
            raise Unauthorized("Missing, malformed or stale Slack signature")
        return None

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
        return core.verify_headers(secret, headers, body, now=now)

    def parse(self, headers: Mapping[str, str], body: bytes) -> core.SlackRequest:
        return core.SlackRequest.from_http(headers, body)

    @property
    def autocommit_fast_path(self) -> bool:
        # On PostgreSQL the candidates and `/tt status` are read on the pipeline's one
        # autocommit connection; the other commands run after it, in their own transactions.
        return self.db.is_postgres

    async def prepare(self) -> tuple[tzinfo, int]:
        """The app settings, read before the pipeline takes its connection (a cache miss may
        need a pooled connection of its own)."""
        return await self.db.app_settings()

    async def candidates(self, hint: Any, conn: Any) -> list[Candidate]:
        """Every active Slack integration: users may share one app, hence one signing secret.

        Only what routing needs is read (the secret, the link, the workspace), not the whole
        config: this runs for every slash command.
        """
        if conn is not None:  # an autocommit driver connection: one statement
            rows = [tuple(r) for r in await conn.fetch(CANDIDATES_SQL, self.provider)]
        else:
            config = Integration.config
            query = (
                select(
                    Integration.id,
                    Integration.user_id,
                    config["signing_secret"].as_string(),
                    config["linked_slack_user_id"].as_string(),
                    config[TEAM_KEY].as_string(),
                    User.is_active,
                    User.slack_user_id,
                )
                .join(User, User.id == Integration.user_id)
                .where(Integration.provider == self.provider, Integration.is_active.is_(True))
                .order_by(Integration.id)
            )
            async with self.db.sessions() as session:
                rows = [tuple(r) for r in (await session.execute(query)).all()]
        return [
            Candidate(
                id=rid,
                user_id=uid,
                config={"linked_slack_user_id": linked, TEAM_KEY: team},
                stored_secret=secret,
                extra={"owner_active": bool(active), "slack_user_id": slack_user_id},
            )
            for rid, uid, secret, linked, team, active, slack_user_id in rows
        ]

    def linked(self, verified: Sequence[Candidate], user_id: str, team_id: str) -> list[Candidate]:
        """The integrations a Slack user drives: linked by member ID (and team, once known)."""
        found = []
        for candidate in verified:
            member = candidate.config.get("linked_slack_user_id") or candidate.extra.get(
                "slack_user_id"
            )
            if not member or member != user_id:
                continue
            team = candidate.config.get(TEAM_KEY)
            if team and team_id and team != team_id:
                continue
            found.append(candidate)
        return found

    def _owner(
        self, verified: Sequence[Candidate], user_id: str, team_id: str
    ) -> Candidate | dict[str, Any]:
        """The one integration to act for, or the ephemeral reply saying why there is none."""
        found = self.linked(verified, user_id, team_id)
        if not found:
            return core.reply_not_linked(user_id, self.settings.public("/"))
        if len(found) > 1:
            return core.reply_error(
                "This Slack account is linked to several TimeTracker users: unlink it from all "
                "but one on the Slack card."
            )
        if not found[0].extra.get("owner_active"):
            return core.reply_error("Your TimeTracker account is inactive.")
        return found[0]

    async def route(
        self, event: core.SlackRequest, verified: Sequence[Candidate]
    ) -> Routed | Answer:
        if isinstance(event, core.SslCheck):
            return Answer(200, {"ok": True}, "ping")
        if isinstance(event, core.UrlVerification):
            return Answer(200, {"challenge": event.challenge}, "ping")
        if isinstance(event, core.SlashCommand):
            owner = self._owner(verified, event.user_id, event.team_id)
            if not isinstance(owner, Candidate):
                return Answer(200, owner, "unlinked", attributed=False)
            if core.parse_command(event.text).verb == "status":
                # A read only: on the pipeline's connection when it holds one (PostgreSQL).
                return Routed(owner, self._status_handler, None, claims_itself=True, writes=False)
            return Routed(owner, self._command_handler, None, writes=False)
        if isinstance(event, core.BlockAction):
            if core.stop_button_entry_id(event) is None:
                return Answer(200, {"ok": True, "ignored": event.action_id[:64]}, "ignored")
            owner = self._owner(verified, event.user_id, event.team_id)
            if not isinstance(owner, Candidate):
                reply = core.reply_stop_refused()
                self.respond_later(event.response_url, reply)
                return Answer(200, reply, "refused", attributed=False)
            return Routed(owner, self._button_handler, None, writes=False)
        if isinstance(event, core.EventCallback):
            # Nothing is done with events yet; a retry (same event_id) is answered as a duplicate.
            candidate = next(
                (c for c in verified if c.config.get(TEAM_KEY) == event.team_id), verified[0]
            )
            return Routed(
                candidate, self._event_handler, delivery_key(event.event_id, candidate.id)
            )
        kind = getattr(event, "kind", type(event).__name__)
        return Answer(200, {"ok": True, "ignored": str(kind)[:64]}, "ignored")

    async def _command_handler(self, delivery: Delivery) -> None:
        async def run() -> None:  # after the commit: the timer service has its own transaction
            user = await self._user(delivery.candidate.user_id)
            delivery.answer["reply"] = await actions.run_command(self, user, delivery.event)
            delivery.answer["outcome"] = "command"

        delivery.after_commit.append(run)

    async def _status_handler(self, delivery: Delivery) -> None:
        app_tz = delivery.prepared[0] if delivery.prepared else None
        delivery.answer["reply"] = await actions.status(
            self,
            delivery.candidate.user_id,
            delivery.event.command or core.COMMAND,
            conn=delivery.conn,
            app_tz=app_tz,
        )
        delivery.answer["outcome"] = "command"

    async def _button_handler(self, delivery: Delivery) -> None:
        async def run() -> None:
            user = await self._user(delivery.candidate.user_id)
            reply = await actions.stop_button(self, user, delivery.event)
            delivery.answer["reply"] = reply
            delivery.answer["outcome"] = "button"
            self.respond_later(delivery.event.response_url, reply)

        delivery.after_commit.append(run)

    async def _event_handler(self, delivery: Delivery) -> None:
        delivery.answer["reply"] = {"ok": True, "event": delivery.event.event_type[:64]}

    def answer(self, delivery: Delivery) -> Answer:
        # Commands and clicks are counted apart from "processed": a processed event clears the
        # integration's last error (base.ConnectionFacts), which for Slack is about posting.
        reply = delivery.answer.get("reply") or {"ok": True}
        return Answer(200, reply, delivery.answer.get("outcome") or "processed")

    async def _user(self, user_id: int) -> User:
        async with self.db.sessions() as session:
            user = await session.get(User, user_id)
        assert user is not None  # candidates join users
        return user

    # -- replies to a response_url (Block Kit buttons: Slack ignores the HTTP answer's body) ----

    def respond_later(self, url: str, reply: Mapping[str, Any]) -> None:
        host = urlsplit(url).hostname if url else None
        if self.events is None or host not in RESPONSE_URL_HOSTS:
            return
        self.events.publish(RESPOND_EVENT, (url, dict(reply)))

    async def _respond(self, item: tuple[str, dict[str, Any]]) -> None:
        url, reply = item
        result = await self.http.request("Slack", "POST", url, json_body=reply, retries=0)
        if not result.ok:
            log.info("slack: response_url answered %s", result.status)

    # -- timer notifications (a durable subscriber of the outbox) -----------------------------

    async def on_timer_event(self, record: TimerEventRecord) -> None:
        """Post the start or stop of a linked user's timer to their channel, exactly once.

        Permanent Slack errors are recorded on the integration and end the retries; transient
        ones are recorded too and raised, so the outbox tries again with backoff.
        """
        row = await self.store.find(record.user_id)
        if row is None or not row.is_active:
            return
        config = self.store.config(row)
        started = record.kind == STARTED
        wanted = self.option(config, "notify_on_start" if started else "notify_on_stop")
        if not wanted or not config.get("channel_id") or not config.has("bot_token"):
            return
        event = await self.timer.describe(record)
        if event is None:
            return  # the entry was deleted before it could be announced
        entry = event.entry
        if started:
            message = core.timer_started_message(
                event.user_display_name,
                event.project_name or "",
                event.task_name,
                _wall(entry.get("start_time")),
                entry_id=entry.get("id"),
            )
        else:
            message = core.timer_stopped_message(
                event.user_display_name,
                event.project_name or "",
                float(entry.get("duration_seconds") or 0),
                bool(entry.get("billable")),
            )
        outcome = await self.post(config, message)
        await self._record_post(row, outcome)

    async def _record_post(self, row: Integration, outcome: core.ApiOutcome) -> None:
        if outcome.ok:
            if row.last_error:
                await self.store.record_sync(row.id, "success")
            return
        await self.store.record_sync(row.id, "error", outcome.message)
        if outcome.permanent:
            raise PermanentFailure(outcome.message)
        if outcome.retry_after:  # Slack's 429 Retry-After: not one try sooner
            raise RetryLater(outcome.message, outcome.retry_after)
        raise RuntimeError(outcome.message)

    # -- daily summary --------------------------------------------------------------------------

    async def due_summaries(self) -> dict[int, date]:
        """Integration id → the local day whose summary is due now, for those that want one."""
        now = self.clock()
        async with self.db.sessions() as session:
            app_tz, _ = await self.db.app_settings(session)
            rows = (
                await session.execute(
                    select(Integration, User.timezone)
                    .join(User, User.id == Integration.user_id)
                    .where(
                        Integration.provider == self.provider,
                        Integration.is_active.is_(True),
                        User.is_active.is_(True),
                    )
                )
            ).all()
        due: dict[int, date] = {}
        for row, tz_name in rows:
            config = self.store.config(row)
            if not self.option(config, "daily_summary") or not config.get("channel_id"):
                continue
            stale = self._stale_claim(config)
            if stale is not None:  # claimed by a run that died before posting: post it now
                due[row.id] = stale
                continue
            try:
                day = core.summary_due(
                    now, zone(tz_name, app_tz), self.option(config, "daily_summary_time")
                )
            except ValueError:
                continue
            if day is not None:
                due[row.id] = day
        return due

    async def run_daily_summary(self) -> JobReport:
        due = await self.due_summaries()

        async def work(row: Integration) -> SyncOutcome:
            return await self.post_summary(row, due[row.id])

        return await self.runner.run_all(
            SUMMARY_JOB, self, work, eligible=lambda row: row.id in due
        )

    def _claimed_at(self, config: Config | Mapping[str, Any]) -> datetime | None:
        raw = config.get(SUMMARY_CLAIMED_AT_KEY)
        try:
            return datetime.fromisoformat(raw) if isinstance(raw, str) else None
        except ValueError:
            return None

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo is None else now.astimezone(UTC).replace(tzinfo=None)

    def _stale_claim(self, config: Config | Mapping[str, Any]) -> date | None:
        """The day of a claim whose post never finished (its run died), if still worth posting."""
        claimed_at = self._claimed_at(config)
        day = config.get(SUMMARY_DAY_KEY)
        if claimed_at is None or not isinstance(day, str):
            return None
        age = self._now() - claimed_at
        if not self.claim_lease <= age <= STALE_CLAIM_LIMIT:
            return None
        try:
            return date.fromisoformat(day)
        except ValueError:
            return None

    async def claim_summary(self, integration_id: int, day: date) -> bool:
        """Claim `day`'s summary under the row's lock: one claim per day, whoever runs.

        The claim carries its time until the post is done, so a claim left by a replica that
        died mid-post can be taken over once it is older than the lease.
        """

        async def mutate(_row: Integration, config: Config, _s: AsyncSession) -> bool:
            if config.get(SUMMARY_DAY_KEY) == day.isoformat():
                claimed_at = self._claimed_at(config)
                if claimed_at is None or self._now() - claimed_at < self.claim_lease:
                    return False  # posted, or being posted right now
            config.set(SUMMARY_DAY_KEY, day.isoformat())
            config.set(SUMMARY_CLAIMED_AT_KEY, self._now().isoformat())
            return True

        _row, claimed = await self.store.update(integration_id, mutate)
        return bool(claimed)

    async def release_summary(self, integration_id: int, day: date, *, done: bool) -> None:
        """After the post: `done` keeps the day (posted, or given up for good), else frees it."""

        async def mutate(_row: Integration, config: Config, _s: AsyncSession) -> None:
            if config.get(SUMMARY_DAY_KEY) == day.isoformat():
                config.raw.pop(SUMMARY_CLAIMED_AT_KEY, None)
                if not done:
                    config.raw.pop(SUMMARY_DAY_KEY, None)

        await self.store.update(integration_id, mutate)

    async def post_summary(self, row: Integration, day: date) -> SyncOutcome:
        if not await self.claim_summary(row.id, day):
            return SyncOutcome("success", detail={"summary": "already posted", "day": str(day)})
        user = await self._user(row.user_id)
        summary = await self.timer.today(user, day)  # a window past midnight: the day it began
        message = core.daily_summary_message(
            user.display_name, summary.total_seconds / 3600, len(summary.projects)
        )
        fresh = await self.store.get(row.id)
        outcome = await self.post(self.store.config(fresh or row), message)
        # Not posted and worth retrying: released, so a rerun inside the window may post.
        await self.release_summary(row.id, day, done=outcome.ok or outcome.permanent)
        if not outcome.ok:
            return SyncOutcome("error", outcome.message)
        return SyncOutcome("success", detail={"summary": "posted", "day": str(day)})


def _wall(value: Any) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value) if isinstance(value, str) else value

