"""Slack connector end to end: signed requests, /tt, the Stop button, notifications, summary."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from sqlalchemy import func, select, text

from gateway import keys
from gateway.app import create_app
from gateway.connectors.slack import KEY
from gateway.connectors.slack.core import sign
from gateway.db.models import Integration, TimeEntry, TimerEventRow, WebhookDelivery
from tests.conftest import FIXTURES, ON_POSTGRES, Made

SLACK = FIXTURES / "slack"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the signing secret of Slack's published example
OTHER_SECRET = "0123456789abcdef0123456789abcdef"
BOT_TOKEN = "xoxb-1234-5678-faketoken"
CHANNEL = "C123ABC456"
ALICE_SLACK = "U2147483697"  # the user of tests/fixtures/slack/slash-command.body
BOB_SLACK = "U0BOB00001"
TEAM = "T0001"


def fixture(name: str) -> Any:
    return json.loads((SLACK / name).read_text())


class FakeSlack:
    """A local stand-in for Slack's Web API (auth.test, chat.postMessage), recording calls."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.mode = "ok"  # ok, channel_not_found, ratelimited, down, invalid_auth
        self.gate: asyncio.Event | None = None  # when set: chat.postMessage waits for it

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/auth.test", self.auth_test)
        app.router.add_post("/chat.postMessage", self.post_message)
        return app

    async def auth_test(self, request: web.Request) -> web.Response:
        self.auth_headers.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}" or (
            self.mode == "invalid_auth"
        ):
            return web.json_response(fixture("auth.test.invalid_auth.json"))
        return web.json_response(fixture("auth.test.ok.json"))

    async def post_message(self, request: web.Request) -> web.Response:
        self.auth_headers.append(request.headers.get("Authorization"))
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "down":
            return web.Response(status=503, text="upstream down")
        if self.mode == "ratelimited":
            return web.json_response(
                fixture("ratelimited.json"), status=429, headers={"Retry-After": "120"}
            )
        if self.mode in ("channel_not_found", "not_in_channel"):
            return web.json_response(fixture(f"chat.postMessage.{self.mode}.json"))
        self.posts.append(await request.json())
        return web.json_response(fixture("chat.postMessage.ok.json"))


@dataclass
class _Slack:
    app: Any
    client: Any
    made: Made
    alice: Any
    project: Any
    auth: dict[str, str]
    fake: FakeSlack

    @property
    def connector(self):  # type: ignore[no-untyped-def]
        return self.app[KEY]

    async def configure(self, auth: dict[str, str], **changes: Any) -> dict[str, Any]:
        body = {
            "bot_token": BOT_TOKEN,
            "signing_secret": SECRET,
            "channel_id": CHANNEL,
            "linked_slack_user_id": ALICE_SLACK,
            **changes,
        }
        response = await self.client.post("/api/integrations/slack/config", json=body, headers=auth)
        assert response.status == 200, await response.text()
        return await response.json()

    async def send(
        self,
        body: bytes,
        *,
        secret: str = SECRET,
        timestamp: str | None = None,
        signature: str | None = None,
        content_type: str = "application/x-www-form-urlencoded",
        headers: dict[str, str] | None = None,
    ):  # type: ignore[no-untyped-def]
        ts = timestamp or str(int(time.time()))
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature if signature is not None else sign(secret, ts, body),
            **(headers or {}),
        }
        return await self.client.post("/api/integrations/slack/events", data=body, headers=sent)

    async def command(
        self, text_: str, *, user: str = ALICE_SLACK, team: str = TEAM, secret: str = SECRET
    ) -> dict[str, Any]:
        form = {
            "token": "ignored",
            "team_id": team,
            "channel_id": "C2147483705",
            "user_id": user,
            "user_name": "someone",
            "command": "/tt",
            "text": text_,
            "trigger_id": f"{uuid.uuid4().int}.1.abc",
        }
        started = time.monotonic()
        response = await self.send(urlencode(form).encode(), secret=secret)
        assert time.monotonic() - started < 3  # Slack's budget
        assert response.status == 200, await response.text()
        return await response.json()

    async def click_stop(
        self, entry_id: int, *, user: str = ALICE_SLACK, response_url: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "team_id": TEAM},
            "team": {"id": TEAM},
            "channel": {"id": CHANNEL},
            "container": {"type": "message", "message_ts": "1503435956.000247"},
            "actions": [
                {
                    "type": "button",
                    "action_id": "tt_stop_timer",
                    "value": str(entry_id),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        if response_url:
            payload["response_url"] = response_url
        response = await self.send(urlencode({"payload": json.dumps(payload)}).encode())
        assert response.status == 200, await response.text()
        return await response.json()

    async def entries(self) -> list[TimeEntry]:
        async with self.app[keys.DB].sessions() as s:
            return list((await s.execute(select(TimeEntry).order_by(TimeEntry.id))).scalars())

    async def integration(self, user_id: int) -> Integration:
        async with self.app[keys.DB].sessions() as s:
            return (
                await s.execute(
                    select(Integration).where(
                        Integration.provider == "slack_connector", Integration.user_id == user_id
                    )
                )
            ).scalar_one()

    async def settle(self, until: Callable[[], bool], seconds: float = 5.0) -> None:
        """Drive the outbox (its background loop runs too) until `until()` or the timeout."""
        outbox = self.app[keys.OUTBOX]
        deadline = time.monotonic() + seconds
        while True:
            await outbox.dispatch_once()
            if until() or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)

    async def quiet(self) -> None:
        """Let anything still pending run, so "exactly once" is checked after the fact."""
        for _ in range(3):
            await self.app[keys.OUTBOX].dispatch_once()
            await asyncio.sleep(0.1)

    async def events(self) -> list[TimerEventRow]:
        async with self.app[keys.DB].sessions() as s:
            return list((await s.execute(select(TimerEventRow))).scalars())


@pytest.fixture
async def fake_slack(aiohttp_server) -> tuple[FakeSlack, str]:  # type: ignore[no-untyped-def]
    fake = FakeSlack()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def sl(aiohttp_client, settings, fake_slack):  # type: ignore[no-untyped-def]
    fake, url = fake_slack
    app = create_app(replace(settings, slack_api_url=url))
    client = await aiohttp_client(app)
    made = Made(app)
    alice = await made.user("alice", full_name="Alice Liddell")
    project = await made.project("Website Redesign")
    token = await made.token(alice)
    auth = {"Authorization": f"Bearer {token}"}
    slack = _Slack(app, client, made, alice, project, auth, fake)
    saved = await slack.configure(auth)
    assert saved["is_active"] is True
    return slack


# -- config and status ----------------------------------------------------------------------------


async def test_config_status_and_manifest(sl) -> None:
    response = await sl.client.get("/api/integrations/slack/status", headers=sl.auth)
    body = await response.json()
    assert body["ok"] and body["is_active"] and body["connected"]
    assert body["has_bot_token"] is True and body["has_signing_secret"] is True
    assert "bot_token" not in body and "signing_secret" not in body
    assert BOT_TOKEN not in json.dumps(body) and SECRET not in json.dumps(body)
    assert body["channel_id"] == CHANNEL
    assert (body["notify_on_start"], body["notify_on_stop"], body["daily_summary"]) == (
        True,
        True,
        False,
    )
    assert body["daily_summary_time"] == "18:00"
    assert body["events_url"] == "http://127.0.0.1:8080/api/integrations/slack/events"
    manifest = body["manifest"]
    assert manifest["features"]["slash_commands"][0]["url"] == body["events_url"]
    assert manifest["settings"]["interactivity"]["request_url"] == body["events_url"]
    assert json.loads(body["manifest_json"]) == manifest  # the card's copyable text


async def test_one_secret_alone_leaves_it_inactive(sl) -> None:
    bob = await sl.made.user("bob")
    auth = {"Authorization": f"Bearer {await sl.made.token(bob)}"}
    response = await sl.client.post(
        "/api/integrations/slack/config", json={"bot_token": BOT_TOKEN}, headers=auth
    )
    body = await response.json()
    assert body["is_active"] is False and body["missing"] == ["signing_secret"]


async def test_bad_values_are_refused_with_their_field(sl) -> None:
    for body, field in (
        ({"bot_token": "not-a-token"}, "bot_token"),
        ({"daily_summary_time": "25:00"}, "daily_summary_time"),
        ({"channel_id": "General Channel!"}, "channel_id"),
        ({"linked_slack_user_id": "alice"}, "linked_slack_user_id"),
    ):
        response = await sl.client.post(
            "/api/integrations/slack/config", json=body, headers=sl.auth
        )
        assert response.status == 400
        assert (await response.json())["field"] == field


async def test_a_slack_member_links_one_user_only(sl) -> None:
    bob = await sl.made.user("bob")
    auth = {"Authorization": f"Bearer {await sl.made.token(bob)}"}
    response = await sl.client.post(
        "/api/integrations/slack/config",
        json={"linked_slack_user_id": ALICE_SLACK},
        headers=auth,
    )
    assert response.status == 400
    assert (await response.json())["field"] == "linked_slack_user_id"


async def test_disconnect_wipes_secrets_keeps_settings(sl) -> None:
    response = await sl.client.post("/api/integrations/slack/disconnect", headers=sl.auth)
    assert (await response.json()) == {"ok": True}
    row = await sl.integration(sl.alice.id)
    assert row.is_active is False
    assert "bot_token" not in row.config and "signing_secret" not in row.config
    assert row.config["channel_id"] == CHANNEL
    # A request signed with the old secret is no longer anyone's.
    body = (SLACK / "slash-command.body").read_bytes()
    assert (await sl.send(body)).status == 401


# -- test button ------------------------------------------------------------------------------


async def test_test_checks_auth_records_team_and_posts(sl) -> None:
    response = await sl.client.post("/api/integrations/slack/test", headers=sl.auth)
    body = await response.json()
    assert body["ok"] is True, body
    assert body["connected_as"] == "grace" and body["team_id"] == "T12345678"
    assert sl.fake.auth_headers[0] == f"Bearer {BOT_TOKEN}"
    [post] = sl.fake.posts
    assert post["channel"] == CHANNEL and "can post here" in post["text"]
    row = await sl.integration(sl.alice.id)
    assert row.config["team_id"] == "T12345678"
    status = await (await sl.client.get("/api/integrations/slack/status", headers=sl.auth)).json()
    assert status["connected_as"] == "grace"
    # From now on only commands from that workspace act for Alice.
    reply = await sl.command("status")
    assert "not linked" in reply["text"]


async def test_test_maps_errors_to_sentences(sl) -> None:
    sl.fake.mode = "invalid_auth"
    body = await (await sl.client.post("/api/integrations/slack/test", headers=sl.auth)).json()
    assert body["ok"] is False and body["code"] == "invalid_auth"
    assert "rejected the bot token" in body["error"]
    sl.fake.mode = "channel_not_found"
    body = await (await sl.client.post("/api/integrations/slack/test", headers=sl.auth)).json()
    assert body["ok"] is False and body["code"] == "channel_not_found"
    assert CHANNEL in body["error"] and "/invite" in body["error"]


async def test_test_without_integration_is_409(sl) -> None:
    bob = await sl.made.user("bob")
    auth = {"Authorization": f"Bearer {await sl.made.token(bob)}"}
    response = await sl.client.post("/api/integrations/slack/test", headers=auth)
    assert response.status == 409
    assert (await response.json())["error"] == "Integration not configured"


# -- signatures --------------------------------------------------------------------------------


async def test_published_vector_verifies_against_the_receiver(sl) -> None:
    vector = fixture("signature-test-vector.json")
    assert (
        sign(vector["signing_secret"], vector["timestamp"], vector["body"].encode())
        == (vector["expected_signature"])
    )
    # The published request is five years old: the receiver must refuse it as stale.
    response = await sl.send(
        vector["body"].encode(),
        timestamp=vector["timestamp"],
        signature=vector["expected_signature"],
    )
    assert response.status == 401


async def test_fixture_slash_command_starts_a_timer(sl) -> None:
    body = (SLACK / "slash-command.body").read_bytes()
    response = await sl.send(body)
    assert response.status == 200
    reply = await response.json()
    assert reply["response_type"] == "ephemeral"
    assert "Timer started on *Website Redesign*" in reply["text"]
    [entry] = await sl.entries()
    assert (entry.user_id, entry.project_id, entry.source) == (sl.alice.id, sl.project.id, "auto")


@pytest.mark.parametrize(
    "change",
    [
        {"signature": ""},
        {"signature": "v0=" + "0" * 64},
        {"secret": OTHER_SECRET},
        {"age": 301},
        {"age": -400},
        {"timestamp": "soon"},
    ],
)
async def test_bad_signatures_are_401_and_write_nothing(sl, change: dict[str, Any]) -> None:
    body = (SLACK / "slash-command.body").read_bytes()
    if "age" in change:  # correctly signed, but outside the five-minute window
        ts = str(int(time.time()) - change.pop("age"))
        change = {"timestamp": ts, "signature": sign(SECRET, ts, body)}
    elif "timestamp" in change:
        change["signature"] = "v0=" + "0" * 64
    response = await sl.send(body, **change)
    assert response.status == 401
    assert await sl.entries() == []
    async with sl.app[keys.DB].sessions() as s:
        assert (await s.execute(select(func.count()).select_from(WebhookDelivery))).scalar() == 0


async def test_missing_headers_are_401(sl) -> None:
    body = (SLACK / "slash-command.body").read_bytes()
    response = await sl.client.post(
        "/api/integrations/slack/events",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 401
    assert await sl.entries() == []


async def test_body_changed_after_signing_is_401(sl) -> None:
    body = (SLACK / "slash-command.body").read_bytes()
    ts = str(int(time.time()))
    signature = sign(SECRET, ts, body)
    tampered = body.replace(b"Website+Redesign", b"Other")
    response = await sl.send(tampered, timestamp=ts, signature=signature)
    assert response.status == 401
    assert await sl.entries() == []


async def test_url_verification_and_ssl_check(sl) -> None:
    raw = (SLACK / "url_verification.json").read_bytes()
    response = await sl.send(raw, content_type="application/json")
    assert response.status == 200
    assert (await response.json())["challenge"] == fixture("url_verification.json")["challenge"]
    assert (await sl.send(raw, content_type="application/json", secret=OTHER_SECRET)).status == 401
    response = await sl.send(b"ssl_check=1&token=x")
    assert response.status == 200
    assert (await sl.send(b"ssl_check=1&token=x", signature="")).status == 401


async def test_event_retries_are_acknowledged_once(sl) -> None:
    event = {
        "type": "event_callback",
        "team_id": TEAM,
        "event_id": "Ev0PV52K21",
        "event": {"type": "app_mention", "text": "hi"},
    }
    raw = json.dumps(event).encode()
    first = await sl.send(raw, content_type="application/json")
    assert first.status == 200 and (await first.json()).get("duplicate") is None
    again = await sl.send(
        raw,
        content_type="application/json",
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert again.status == 200 and (await again.json())["duplicate"] is True
    async with sl.app[keys.DB].sessions() as s:
        count = (await s.execute(select(func.count()).select_from(WebhookDelivery))).scalar()
    assert count == 1
    report = await sl.app[keys.SCHEDULER].run("webhook_deliveries_prune")
    assert report.outcome == "success" and report.detail["removed"] == 0  # still fresh


# -- commands ----------------------------------------------------------------------------------


async def test_unlinked_slack_user_is_told_how_to_link(sl) -> None:
    reply = await sl.command("start Website", user="U0STRANGER1")
    assert reply["response_type"] == "ephemeral"
    assert "not linked" in reply["text"] and "U0STRANGER1" in reply["text"]
    assert await sl.entries() == []
    # Nobody's integration records the stranger's command as its last event.
    status = await (await sl.client.get("/api/integrations/slack/status", headers=sl.auth)).json()
    assert status["last_event_status"] is None


async def test_users_slack_user_id_links_too(sl) -> None:
    async with sl.app[keys.DB].sessions() as s:
        await s.execute(
            text("UPDATE users SET slack_user_id = :sid WHERE id = :id"),
            {"sid": "U0CAROL0001", "id": sl.alice.id},
        )
        await s.commit()
    await sl.configure(sl.auth, linked_slack_user_id="")
    assert "not linked" in (await sl.command("status"))["text"]
    reply = await sl.command("status", user="U0CAROL0001")
    assert "No timer is running" in reply["text"]


async def test_help_and_unknown_verbs(sl) -> None:
    for typed in ("help", "", "dance"):
        reply = await sl.command(typed)
        assert "TimeTracker commands" in reply["text"]
    assert "dance" in (await sl.command("dance"))["text"]


async def test_start_stop_status_today(sl) -> None:
    assert "No timer is running" in (await sl.command("status"))["text"]
    assert "No timer is running" in (await sl.command("stop"))["text"]
    assert "Which project?" in (await sl.command("start"))["text"]
    reply = await sl.command(f"start {sl.project.id}")
    assert "Timer started on *Website Redesign*" in reply["text"]
    reply = await sl.command("status")
    assert "Running on *Website Redesign*" in reply["text"]
    # A running timer is reported, not replaced.
    other = await sl.made.project("Other")
    reply = await sl.command("start Other")
    assert "already running on *Website Redesign*" in reply["text"]
    assert len(await sl.entries()) == 1
    reply = await sl.command("stop")
    assert "Timer stopped on *Website Redesign* after" in reply["text"]
    [entry] = await sl.entries()
    assert entry.end_time is not None and entry.project_id != other.id
    reply = await sl.command("today")
    assert reply["response_type"] == "ephemeral"
    assert "Today:" in reply["text"] or "Nothing logged today" in reply["text"]


async def test_project_matching(sl) -> None:
    await sl.made.project("Web")
    for i in range(7):
        await sl.made.project(f"Mobile App {i}")
    await sl.made.project("Archived Thing", status="archived")
    # Exact name wins over partial matches ("Web" is inside "Website Redesign").
    assert "Timer started on *Web*" in (await sl.command("start web"))["text"]
    await sl.command("stop")
    # Several partial matches: up to five listed, and how many more.
    reply = await sl.command("start mobile")
    assert "Several projects match" in reply["text"]
    assert reply["blocks"][0]["text"]["text"].count("• Mobile App") == 5
    assert "and 2 more" in reply["text"]
    # A single partial match is used.
    assert "Timer started on *Website Redesign*" in (await sl.command("start redes"))["text"]
    await sl.command("stop")
    assert "No project" in (await sl.command("start nothing-like-it"))["text"]
    assert "No project" in (await sl.command("start archived"))["text"]
    assert len(await sl.entries()) == 2


async def test_start_project_slash_task(sl) -> None:
    task = await sl.made.task(sl.project, sl.alice, name="Homepage copy")
    await sl.made.task(sl.project, sl.alice, name="Footer A")
    await sl.made.task(sl.project, sl.alice, name="Footer B")
    reply = await sl.command("start Website / footer")
    assert "Several tasks match" in reply["text"]
    assert "No task" in (await sl.command("start Website / nope"))["text"]
    reply = await sl.command("start Website / homepage")
    assert "*Website Redesign* — Homepage copy" in reply["text"]
    [entry] = await sl.entries()
    assert entry.task_id == task.id
    # Status names the task too, and the start time as TimeTracker stored it (wall time).
    reply = await sl.command("status")
    assert "Running on *Website Redesign* — Homepage copy since " in reply["text"]
    assert f"since {entry.start_time:%H:%M} (" in reply["text"]


async def test_shared_app_acts_for_the_linked_user_only(sl) -> None:
    bob = await sl.made.user("bob", full_name="Bob")
    bob_auth = {"Authorization": f"Bearer {await sl.made.token(bob)}"}
    await sl.configure(bob_auth, linked_slack_user_id=BOB_SLACK, channel_id="C0BOBCHAN1")
    carol = await sl.made.user("carol")
    carol_auth = {"Authorization": f"Bearer {await sl.made.token(carol)}"}
    await sl.configure(carol_auth, linked_slack_user_id="U0CAROL0001", signing_secret=OTHER_SECRET)
    reply = await sl.command("start Website", user=BOB_SLACK)
    assert "Timer started" in reply["text"]
    [entry] = await sl.entries()
    assert entry.user_id == bob.id
    assert "No timer is running" in (await sl.command("status"))["text"]  # Alice's own
    # Carol's app has another secret: a request signed with it is hers, not Alice's or Bob's.
    reply = await sl.command("status", user="U0CAROL0001", secret=OTHER_SECRET)
    assert "No timer is running" in reply["text"]
    reply = await sl.command("status", user=BOB_SLACK, secret=OTHER_SECRET)
    assert "not linked" in reply["text"]
    reply = await sl.command("status", user="U0CAROL0001")  # Alice's app does not reach Carol
    assert "not linked" in reply["text"]


async def test_inactive_owner_gets_a_refusal(sl) -> None:
    async with sl.app[keys.DB].sessions() as s:
        await s.execute(
            text("UPDATE users SET is_active = false WHERE id = :id"), {"id": sl.alice.id}
        )
        await s.commit()
    reply = await sl.command("start Website")
    assert "inactive" in reply["text"]
    assert await sl.entries() == []


# -- the Stop button ---------------------------------------------------------------------------


async def test_stop_button_by_owner_and_by_someone_else(sl) -> None:
    bob = await sl.made.user("bob")
    bob_auth = {"Authorization": f"Bearer {await sl.made.token(bob)}"}
    await sl.configure(bob_auth, linked_slack_user_id=BOB_SLACK)
    await sl.command("start Website")
    [entry] = await sl.entries()
    refused = await sl.click_stop(entry.id, user=BOB_SLACK)
    assert "only stop your own timer" in refused["text"]
    stranger = await sl.click_stop(entry.id, user="U0STRANGER1")
    assert "only stop your own timer" in stranger["text"]
    assert (await sl.entries())[0].end_time is None
    stopped = await sl.click_stop(entry.id)
    assert "Timer stopped" in stopped["text"]
    assert (await sl.entries())[0].end_time is not None
    again = await sl.click_stop(entry.id)
    assert "already stopped" in again["text"]


# -- notifications -----------------------------------------------------------------------------


async def test_notifications_from_the_api_and_from_tt_exactly_once(sl) -> None:
    response = await sl.client.post(
        "/api/timer/start", json={"project_id": sl.project.id}, headers=sl.auth
    )
    assert response.status == 201
    entry_id = (await response.json())["entry"]["id"]
    await sl.settle(lambda: len(sl.fake.posts) >= 1)
    await sl.quiet()
    [started] = sl.fake.posts
    assert started["channel"] == CHANNEL
    assert "*Alice Liddell* started a timer" in started["blocks"][0]["text"]["text"]
    button = started["blocks"][1]["elements"][0]
    assert (button["action_id"], button["value"]) == ("tt_stop_timer", str(entry_id))
    assert set(sl.fake.auth_headers) == {f"Bearer {BOT_TOKEN}"}
    # Stop from Slack, start from Slack: one post each.
    await sl.command("stop")
    await sl.settle(lambda: len(sl.fake.posts) >= 2)
    await sl.command("start Website")
    await sl.settle(lambda: len(sl.fake.posts) >= 3)
    await sl.quiet()
    assert len(sl.fake.posts) == 3
    assert "stopped a timer" in sl.fake.posts[1]["text"]
    assert "*Billable:* Yes" in sl.fake.posts[1]["blocks"][0]["text"]["text"]
    assert "started a timer" in sl.fake.posts[2]["text"]


async def test_notification_switches_and_no_channel(sl) -> None:
    await sl.configure(sl.auth, notify_on_start=False)
    await sl.command("start Website")
    await sl.command("stop")
    await sl.settle(lambda: len(sl.fake.posts) >= 1)
    await sl.quiet()
    [post] = sl.fake.posts
    assert "stopped a timer" in post["text"]
    await sl.configure(sl.auth, notify_on_start="true", channel_id="")
    await sl.command("start Website")
    await sl.quiet()
    assert len(sl.fake.posts) == 1


@pytest.mark.postgres
@pytest.mark.skipif(not ON_POSTGRES, reason="the time_entries trigger exists on PostgreSQL")
async def test_timer_started_by_timetracker_itself_is_announced(sl) -> None:
    async with sl.app[keys.DB].sessions() as s:
        await s.execute(
            text(
                "INSERT INTO time_entries (user_id, project_id, start_time, source, billable, "
                "paid, break_seconds, created_at, updated_at) VALUES (:u, :p, :t, 'manual', "
                "true, false, 0, :t, :t)"
            ),
            {"u": sl.alice.id, "p": sl.project.id, "t": datetime.now(UTC).replace(tzinfo=None)},
        )
        await s.commit()
    await sl.settle(lambda: len(sl.fake.posts) >= 1)
    await sl.quiet()
    [post] = sl.fake.posts
    assert "started a timer" in post["text"] and "Website Redesign" in post["text"]


@pytest.mark.parametrize("mode", ["down", "ratelimited"])
async def test_slack_down_or_rate_limited_is_retried_later(sl, mode: str) -> None:
    sl.fake.mode = mode
    sl.fake.gate = asyncio.Event()  # Slack answers nothing until the timer has answered
    # Were the start to wait for Slack, it would wait for ever: the gate opens only after.
    response = await asyncio.wait_for(
        sl.client.post("/api/timer/start", json={"project_id": sl.project.id}, headers=sl.auth),
        10,
    )
    assert response.status == 201
    sl.fake.gate.set()  # and then Slack fails

    async def recorded() -> Integration:
        deadline = time.monotonic() + 15
        while True:
            await sl.app[keys.OUTBOX].dispatch_once()
            row = await sl.integration(sl.alice.id)
            if row.last_error or time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.05)

    row = await recorded()
    assert row.last_sync_status == "error"
    assert ("rate-limiting" if mode == "ratelimited" else "HTTP 503") in row.last_error
    [event] = await sl.events()
    assert event.done_at is None and event.available_at > event.created_at  # backing off
    if mode == "ratelimited":  # Slack's Retry-After: 120 s, longer than the first backoff
        assert (event.available_at - event.created_at).total_seconds() >= 119
    assert sl.fake.posts == []
    # Slack is back: the retry posts once and clears the error.
    sl.fake.mode = "ok"
    async with sl.app[keys.DB].sessions() as s:
        await s.execute(text("UPDATE gateway_timer_events SET available_at = created_at"))
        await s.commit()
    await sl.settle(lambda: len(sl.fake.posts) >= 1)
    await sl.quiet()
    assert len(sl.fake.posts) == 1
    assert (await sl.integration(sl.alice.id)).last_error is None


async def test_channel_not_found_is_permanent_and_recorded(sl) -> None:
    sl.fake.mode = "channel_not_found"
    response = await sl.client.post(
        "/api/timer/start", json={"project_id": sl.project.id}, headers=sl.auth
    )
    assert response.status == 201

    async def done() -> list[TimerEventRow]:
        deadline = time.monotonic() + 5
        while True:
            await sl.app[keys.OUTBOX].dispatch_once()
            events = await sl.events()
            if all(e.done_at for e in events) or time.monotonic() > deadline:
                return events
            await asyncio.sleep(0.05)

    [event] = await done()
    assert event.done_at is not None and "does not know channel" in (event.last_error or "")
    row = await sl.integration(sl.alice.id)
    assert "does not know channel" in row.last_error and CHANNEL in row.last_error
    status = await (await sl.client.get("/api/integrations/slack/status", headers=sl.auth)).json()
    assert "does not know channel" in status["last_error"]
    # A command that works says nothing about posting: the error stays until a post succeeds.
    assert "Running on" in (await sl.command("status"))["text"]
    status = await (await sl.client.get("/api/integrations/slack/status", headers=sl.auth)).json()
    assert "does not know channel" in status["last_error"]
    assert status["last_event_status"] == "command"


# -- daily summary -----------------------------------------------------------------------------


async def _summary_due_now(sl) -> None:
    now = datetime.now(UTC)
    if now.minute % 30 >= 28:  # keep clear of a window's end while the test runs
        await asyncio.sleep(130)
        now = datetime.now(UTC)
    await sl.configure(sl.auth, daily_summary=True, daily_summary_time=now.strftime("%H:%M"))


async def test_daily_summary_posts_once_under_concurrent_runs(sl) -> None:
    await _summary_due_now(sl)
    connector = sl.connector
    reports = await asyncio.gather(connector.run_daily_summary(), connector.run_daily_summary())
    assert sum(r.succeeded for r in reports) == 2
    [post] = sl.fake.posts
    assert post["channel"] == CHANNEL
    assert "Daily summary for *Alice Liddell*" in post["blocks"][0]["text"]["text"] or (
        "Daily summary for Alice Liddell" in post["text"]
    )
    # A later run in the same window (or a second replica) does not post again.
    report = await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    assert report.outcome == "success"
    assert len(sl.fake.posts) == 1
    row = await sl.integration(sl.alice.id)
    assert row.config["last_summary_day"] == datetime.now(UTC).date().isoformat()


async def test_daily_summary_not_due_or_off_posts_nothing(sl) -> None:
    report = await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    assert report.detail["integrations"] == 0
    now = datetime.now(UTC)
    later = f"{(now.hour + 2) % 24:02d}:{now.minute:02d}"
    await sl.configure(sl.auth, daily_summary=True, daily_summary_time=later)
    await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    assert sl.fake.posts == []


async def test_daily_summary_failure_is_recorded_and_released(sl) -> None:
    await _summary_due_now(sl)
    sl.fake.mode = "down"
    report = await sl.connector.run_daily_summary()
    assert report.failed == 1
    row = await sl.integration(sl.alice.id)
    assert row.last_sync_status == "error" and "503" in row.last_error
    assert "last_summary_day" not in row.config  # a rerun inside the window may post
    sl.fake.mode = "ok"
    await sl.connector.run_daily_summary()
    assert len(sl.fake.posts) == 1


@pytest.mark.skipif(ON_POSTGRES, reason="CLI start-up is covered on SQLite")
def test_run_job_slack_daily_summary_from_the_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_cli import run

    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_"))
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(FIXTURES.parents[1]),
    )
    assert run(["migrate"], env).returncode == 0
    result = run(["run-job", "slack_daily_summary"], env)
    assert result.returncode == 0, result.stderr


async def test_summary_window_past_midnight_reports_the_day_it_began(
    aiohttp_client, settings, fake_slack
) -> None:
    fake, url = fake_slack
    moment = datetime(2026, 3, 10, 0, 10, tzinfo=UTC)  # ten minutes into the window of 23:50
    app = create_app(replace(settings, slack_api_url=url), clock=lambda: moment)
    client = await aiohttp_client(app)
    made = Made(app)
    alice = await made.user("alice", full_name="Alice Liddell")
    project = await made.project("Website Redesign")
    auth = {"Authorization": f"Bearer {await made.token(alice)}"}
    slack = _Slack(app, client, made, alice, project, auth, fake)
    await slack.configure(auth, daily_summary=True, daily_summary_time="23:50")
    async with app[keys.DB].sessions() as s:
        s.add(
            TimeEntry(
                user_id=alice.id,
                project_id=project.id,
                start_time=datetime(2026, 3, 9, 10, 0),
                end_time=datetime(2026, 3, 9, 12, 30),
                duration_seconds=9000,
                source="manual",
                billable=True,
                paid=False,
                created_at=datetime(2026, 3, 9, 12, 30),
                updated_at=datetime(2026, 3, 9, 12, 30),
            )
        )
        await s.commit()
    report = await slack.connector.run_daily_summary()
    assert report.succeeded == 1, report
    [post] = fake.posts
    assert "2.5h across 1 project" in post["text"]
    assert (await slack.integration(alice.id)).config["last_summary_day"] == "2026-03-09"


async def test_stop_button_replies_go_to_slacks_response_url(sl, monkeypatch) -> None:
    from gateway.connectors.http import HttpResult

    sent: list[tuple[str, Any]] = []
    real = sl.connector.http.request

    async def request(service, method, url, **kwargs):  # type: ignore[no-untyped-def]
        if url.startswith("https://"):
            sent.append((url, kwargs.get("json_body")))
            return HttpResult(status=200, data=None, text="ok")
        return await real(service, method, url, **kwargs)

    monkeypatch.setattr(sl.connector.http, "request", request)
    await sl.command("start Website")
    [entry] = await sl.entries()
    hook = "https://hooks.slack.com/actions/T0001/1234/abcd"
    await sl.click_stop(entry.id, user="U0STRANGER1", response_url=hook)
    await sl.click_stop(entry.id, response_url="https://evil.example/collect")
    await sl.app[keys.EVENTS].drain()
    assert [url for url, _ in sent] == [hook]  # only Slack's hooks host is ever called
    assert "only stop your own timer" in sent[0][1]["text"]
    assert sent[0][1]["replace_original"] is False
    assert (await sl.entries())[0].end_time is not None  # the owner's click stopped it


async def _set_claim(sl, day: str, claimed_at: datetime | None) -> None:  # type: ignore[no-untyped-def]
    from gateway.connectors.slack.service import SUMMARY_CLAIMED_AT_KEY, SUMMARY_DAY_KEY

    async def mutate(_row, config, _s) -> None:  # type: ignore[no-untyped-def]
        config.set(SUMMARY_DAY_KEY, day)
        if claimed_at is None:
            config.raw.pop(SUMMARY_CLAIMED_AT_KEY, None)
        else:
            config.set(SUMMARY_CLAIMED_AT_KEY, claimed_at.isoformat())

    row = await sl.integration(sl.alice.id)
    await sl.connector.store.update(row.id, mutate)


async def test_a_summary_claimed_by_a_run_that_died_is_posted_by_a_later_run(sl) -> None:
    from datetime import timedelta

    from gateway.connectors.slack.service import SUMMARY_CLAIMED_AT_KEY

    now = datetime.now(UTC)
    later = f"{(now.hour + 2) % 24:02d}:{now.minute:02d}"  # outside its window now
    await sl.configure(sl.auth, daily_summary=True, daily_summary_time=later)
    today = now.date().isoformat()
    naive = now.replace(tzinfo=None)
    # Posted under the old format (no claim time), or being posted right now: left alone.
    await _set_claim(sl, today, None)
    await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    await _set_claim(sl, today, naive - timedelta(seconds=5))
    await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    assert sl.fake.posts == []
    # Claimed minutes ago by a replica that died before posting: the next run posts it, once.
    await _set_claim(sl, today, naive - timedelta(minutes=5))
    report = await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    assert report.succeeded == 1, report
    [post] = sl.fake.posts
    assert "Daily summary" in post["text"]
    row = await sl.integration(sl.alice.id)
    assert row.config["last_summary_day"] == today and SUMMARY_CLAIMED_AT_KEY not in row.config
    await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    assert len(sl.fake.posts) == 1
    # Too old to be worth posting (a replica that died yesterday morning): dropped.
    await _set_claim(sl, today, naive - timedelta(hours=7))
    await sl.app[keys.SCHEDULER].run("slack_daily_summary")
    assert len(sl.fake.posts) == 1
