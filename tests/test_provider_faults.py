"""Providers misbehaving: GitHub, Slack and Google answering 500, 429 with Retry-After, hanging
past the timeout, closing the connection mid-answer, sending invalid JSON, `invalid_grant`.

For each: the failure is bounded in time, shows in the status answer and in
`gateway_outbound_requests_total`, is retried where that is safe, leaves other users alone, and
once the fault clears nothing is lost and nothing is done twice. The fakes are the ones of the
connector tests, with a middleware in front that injects the fault.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, text, update

from gateway import keys
from gateway.app import create_app
from gateway.connectors.google.service import JOB as GOOGLE_JOB
from gateway.db.models import Integration, Task, TimeEntry, TimerEventRow
from gateway.services import SERVICES
from tests.conftest import Made, login
from tests.fakes import FakeGitHub, issue
from tests.test_google import (
    ACCESS,
    CODE,
    NOW,
    Clock,
    FakeGoogle,
    _google_settings,
)
from tests.test_slack import BOT_TOKEN, CHANNEL, SECRET, FakeSlack

TIMEOUT = 0.3  # the outbound timeout for these tests (HttpClient.timeout; 10 s in production)
HANG = 2.0  # how long a hanging fake holds a request: well past TIMEOUT, short for teardown
BOB_CHANNEL = "C0BOBCHAN1"


# -- the faults --------------------------------------------------------------------------------


@dataclass
class Rule:
    path: str  # a substring of the request path
    kind: str
    times: int  # how many requests it applies to
    method: str | None = None
    when: Callable[[web.Request, bytes], bool] | None = None


@dataclass
class Faults:
    """A middleware for a fake's app: the next `times` matching requests get the fault."""

    rules: list[Rule] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)

    def add(
        self,
        path: str,
        kind: str,
        times: int = 1_000,
        *,
        method: str | None = None,
        when: Callable[[web.Request, bytes], bool] | None = None,
    ) -> None:
        self.rules.append(Rule(path, kind, times, method, when))

    def clear(self) -> None:
        self.rules.clear()

    def install(self, app: web.Application) -> web.Application:
        app.middlewares.append(self.middleware)
        return app

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()  # cached: the handler reads it again
        for rule in self.rules:
            if rule.times <= 0 or rule.path not in request.path:
                continue
            if rule.method and rule.method != request.method:
                continue
            if rule.when is not None and not rule.when(request, body):
                continue
            rule.times -= 1
            self.injected.append(rule.kind)
            return await self.inject(rule.kind, request, handler)
        return await handler(request)

    async def inject(self, kind: str, request: web.Request, handler: Any) -> web.StreamResponse:
        if kind == "500":
            return web.json_response({"message": "Internal error"}, status=500)
        if kind == "503":
            return web.Response(status=503, text="upstream down")
        if kind == "429":
            return web.json_response(
                {"ok": False, "error": "ratelimited", "message": "slow down"},
                status=429,
                headers={"Retry-After": "1"},
            )
        if kind == "429_long":
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "300"}
            )
        if kind == "hang":
            await asyncio.sleep(HANG)
            return web.Response(status=504, text="too late")
        if kind == "hang_after":  # the work is done, the answer never arrives in time
            response = await handler(request)
            await asyncio.sleep(HANG)
            return response
        if kind == "close":  # headers and part of the body, then the connection drops
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            response.content_length = 4096
            await response.prepare(request)
            await response.write(b'{"ok": true, "partial": ')
            assert request.transport is not None
            request.transport.close()
            return response
        if kind == "badjson":
            return web.Response(status=200, text='{"ok": tru', content_type="application/json")
        if kind == "badjson_after":  # the work is done, the answer is garbled on the way back
            await handler(request)
            return web.Response(status=200, text='{"ok": tru', content_type="application/json")
        raise AssertionError(kind)


async def metric(client: Any, service: str, outcome: str) -> float:
    body = await (await client.get("/metrics")).text()
    total = 0.0
    for line in body.splitlines():
        if not line.startswith("gateway_outbound_requests_total{"):
            continue
        if f'service="{service}"' in line and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class Timer:
    def __enter__(self) -> Timer:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started


def fast(app: web.Application) -> web.Application:
    """The app's one HttpClient with a short per-attempt timeout."""
    app[SERVICES].http.timeout = TIMEOUT
    return app


def _max_wait(retries: int = 2) -> float:
    """What HttpClient may spend on one logical call here: every attempt timing out, the backoff
    waits (1 s, 2 s) or Retry-After waits (1 s) in between, and slack for a busy machine."""
    return (retries + 1) * TIMEOUT + sum(2.0**i for i in range(retries)) + 2.0


# -- GitHub ------------------------------------------------------------------------------------


@dataclass
class GH:
    app: web.Application
    client: Any
    made: Made
    fake: FakeGitHub
    faults: Faults
    alice: dict[str, str]
    bob: dict[str, str]

    async def sync(self, auth: dict[str, str]) -> tuple[int, dict[str, Any]]:
        response = await self.client.post("/api/integrations/github/sync", headers=auth)
        return response.status, await response.json()

    async def status(self, auth: dict[str, str]) -> dict[str, Any]:
        response = await self.client.get("/api/integrations/github/status", headers=auth)
        return await response.json()

    async def tasks(self) -> list[Task]:
        async with self.app[keys.DB].sessions() as s:
            return list((await s.execute(select(Task).order_by(Task.id))).scalars())


@pytest.fixture
async def gh(aiohttp_client, aiohttp_server, settings) -> GH:  # type: ignore[no-untyped-def]
    fake, faults = FakeGitHub(), Faults()
    server = await aiohttp_server(faults.install(fake.app()))
    url = str(server.make_url("")).rstrip("/")
    app = fast(create_app(replace(settings, github_api_url=url)))
    client = await aiohttp_client(app)
    made = Made(app)
    auths = []
    for name, repo in (("alice", "Hello-World"), ("bob", "Other-Repo")):
        user = await made.user(name, role="admin")
        project = await made.project(f"Project {name}")
        auth = {"Authorization": f"Bearer {await made.token(user)}"}
        saved = await client.post(
            "/api/integrations/github/config",
            json={
                "repo_owner": "Codertocat",
                "repo_name": repo,
                "default_project_id": project.id,
                "github_token": fake.token,
            },
            headers=auth,
        )
        assert saved.status == 200, await saved.text()
        auths.append(auth)
    fake.issues = [issue(1, "First"), issue(2, "Second")]
    return GH(app, client, made, fake, faults, *auths)


GITHUB_FAULTS = ["500", "503", "429", "hang", "close", "badjson"]


@pytest.mark.parametrize("kind", GITHUB_FAULTS)
async def test_github_sync_fault_is_bounded_recorded_and_heals_without_duplicates(
    gh: GH, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gh.faults.add("/repos/Codertocat/Hello-World/issues", kind)  # Alice's repository only
    network = kind in ("hang", "close")
    outcome = {"hang": "network_error", "close": "network_error", "badjson": "invalid_answer"}
    outcome = outcome.get(kind, "http_error")
    before = await metric(gh.client, "GitHub", outcome)
    with Timer() as took:
        (status, body), (bob_status, bob_body) = await asyncio.gather(
            gh.sync(gh.alice), gh.sync(gh.bob)
        )
    assert took.seconds < _max_wait(), took.seconds
    assert status == 502 and body["ok"] is False and body["error"], body
    if network:
        assert "could not be reached" in body["error"]
    # Bob's repository, synced at the same time, is not touched by Alice's fault.
    assert bob_status == 200 and bob_body["created"] == 2, bob_body
    state = await gh.status(gh.alice)
    assert state["last_sync_status"] == "error" and state["last_error"], state
    assert (await gh.status(gh.bob))["last_sync_status"] == "success"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(m.startswith("github: integration ") for m in said), said
    assert gh.fake.token not in caplog.text
    assert await metric(gh.client, "GitHub", outcome) == before + 1
    # GETs are retried (429/503 and network errors; a 500 and a bad body are not).
    retried = kind in ("503", "429", "hang", "close")
    assert gh.faults.injected.count(kind) == (3 if retried else 1), gh.faults.injected
    # The fault clears: one sync creates Alice's two tasks, a second creates nothing.
    gh.faults.clear()
    status, body = await gh.sync(gh.alice)
    assert status == 200 and body["created"] == 2, body
    status, body = await gh.sync(gh.alice)
    assert status == 200 and body["created"] == 0, body
    tasks = await gh.tasks()
    assert len(tasks) == 4 and len({(t.project_id, t.external_ref) for t in tasks}) == 4
    state = await gh.status(gh.alice)
    assert state["last_sync_status"] == "success" and not state["last_error"], state


@pytest.mark.parametrize("kind", ["503", "429", "hang", "close"])
async def test_github_sync_retries_a_passing_fault_within_the_call(gh: GH, kind: str) -> None:
    gh.faults.add("/repos/Codertocat/Hello-World/issues", kind, times=1)
    with Timer() as took:
        status, body = await gh.sync(gh.alice)
    assert took.seconds < _max_wait(), took.seconds
    assert status == 200 and body["created"] == 2, body
    if kind == "429":
        assert took.seconds >= 1.0  # Retry-After: 1 was honoured
    assert await metric(gh.client, "GitHub", "ok") >= 1


@pytest.mark.parametrize("kind", GITHUB_FAULTS)
async def test_github_test_button_fault_is_bounded_and_said(gh: GH, kind: str) -> None:
    gh.faults.add("/user", kind)
    with Timer() as took:
        response = await gh.client.post("/api/integrations/github/test", headers=gh.alice)
    assert took.seconds < _max_wait(), took.seconds
    body = await response.json()
    assert response.status == 200 and body["ok"] is False and body["error"], body
    state = await gh.status(gh.alice)
    assert state["last_checked_at"] is not None
    gh.faults.clear()
    body = await (await gh.client.post("/api/integrations/github/test", headers=gh.alice)).json()
    assert body["ok"] is True and body["connected_as"] == "octocat", body


# -- Slack -------------------------------------------------------------------------------------


@dataclass
class SL:
    app: web.Application
    client: Any
    made: Made
    fake: FakeSlack
    faults: Faults
    alice: Any
    bob: Any
    auth: dict[str, str]
    bob_auth: dict[str, str]
    project: Any

    async def start(self, auth: dict[str, str]) -> None:
        response = await self.client.post(
            "/api/timer/start", json={"project_id": self.project.id}, headers=auth
        )
        assert response.status == 201, await response.text()

    def posts_to(self, channel: str) -> list[dict[str, Any]]:
        return [p for p in self.fake.posts if p["channel"] == channel]

    async def dispatch_until(self, done: Callable[[], Awaitable[bool]], seconds: float) -> None:
        outbox = self.app[keys.OUTBOX]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await outbox.dispatch_once()
            if await done():
                return
            await asyncio.sleep(0.05)

    async def integration(self, user_id: int) -> Integration:
        async with self.app[keys.DB].sessions() as s:
            return (
                await s.execute(
                    select(Integration).where(
                        Integration.provider == "slack_connector", Integration.user_id == user_id
                    )
                )
            ).scalar_one()

    async def events(self) -> list[TimerEventRow]:
        async with self.app[keys.DB].sessions() as s:
            return list((await s.execute(select(TimerEventRow))).scalars())


@pytest.fixture
async def sl(aiohttp_client, aiohttp_server, settings) -> SL:  # type: ignore[no-untyped-def]
    fake, faults = FakeSlack(), Faults()
    server = await aiohttp_server(faults.install(fake.app()))
    url = str(server.make_url("")).rstrip("/")
    # The background dispatcher stays off: the test drives the outbox, one claim at a time.
    app = fast(create_app(replace(settings, slack_api_url=url), dispatch_events=False))
    client = await aiohttp_client(app)
    made = Made(app)
    project = await made.project("Website Redesign")
    people = []
    for name, member, channel in (
        ("alice", "U2147483697", CHANNEL),
        ("bob", "U0BOB00001", BOB_CHANNEL),
    ):
        user = await made.user(name, full_name=name.title())
        auth = {"Authorization": f"Bearer {await made.token(user)}"}
        saved = await client.post(
            "/api/integrations/slack/config",
            json={
                "bot_token": BOT_TOKEN,
                "signing_secret": SECRET,
                "channel_id": channel,
                "linked_slack_user_id": member,
            },
            headers=auth,
        )
        assert saved.status == 200, await saved.text()
        people.append((user, auth))
    (alice, auth), (bob, bob_auth) = people
    return SL(app, client, made, fake, faults, alice, bob, auth, bob_auth, project)


def _to_alice(_request: web.Request, body: bytes) -> bool:
    return CHANNEL.encode() in body


SLACK_FAULTS = ["500", "429", "hang", "close", "badjson"]


@pytest.mark.parametrize("kind", SLACK_FAULTS)
async def test_slack_notification_fault_is_retried_later_and_posted_once(
    sl: SL, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    sl.faults.add("/chat.postMessage", kind, when=_to_alice)  # Alice's channel only
    outcome = {"hang": "network_error", "close": "network_error", "badjson": "invalid_answer"}
    outcome = outcome.get(kind, "http_error")
    before = await metric(sl.client, "Slack", outcome)
    await sl.start(sl.auth)
    await sl.start(sl.bob_auth)

    async def settled() -> bool:
        row = await sl.integration(sl.alice.id)
        return bool(row.last_error) and len(sl.posts_to(BOB_CHANNEL)) == 1

    with Timer() as took:
        await sl.dispatch_until(settled, 10)
    assert took.seconds < 5, took.seconds  # one try per event, no inline waits
    # Bob's notification went out; Alice's is recorded as failed and waits for a retry.
    assert len(sl.posts_to(BOB_CHANNEL)) == 1 and sl.posts_to(CHANNEL) == []
    row = await sl.integration(sl.alice.id)
    assert row.last_sync_status == "error" and row.last_error, row.last_error
    status = await (await sl.client.get("/api/integrations/slack/status", headers=sl.auth)).json()
    assert status["last_error"] == row.last_error
    assert not (await sl.integration(sl.bob.id)).last_error
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("subscriber slack failed" in m for m in said), said
    assert BOT_TOKEN not in caplog.text
    assert await metric(sl.client, "Slack", outcome) >= before + 1
    alice_event = next(e for e in await sl.events() if e.user_id == sl.alice.id)
    assert alice_event.done_at is None and alice_event.available_at > alice_event.created_at
    assert alice_event.locked_until is None and alice_event.last_error
    # The fault clears and the backoff has passed: the message is posted exactly once.
    sl.faults.clear()
    async with sl.app[keys.DB].sessions() as s:
        await s.execute(update(TimerEventRow).values(available_at=TimerEventRow.created_at))
        await s.commit()

    async def posted() -> bool:
        return len(sl.posts_to(CHANNEL)) >= 1

    await sl.dispatch_until(posted, 10)
    for _ in range(3):
        await sl.app[keys.OUTBOX].dispatch_once()
    assert len(sl.posts_to(CHANNEL)) == 1 and len(sl.posts_to(BOB_CHANNEL)) == 1
    assert "started a timer" in sl.posts_to(CHANNEL)[0]["text"]
    assert all(e.done_at is not None for e in await sl.events())
    assert (await sl.integration(sl.alice.id)).last_error is None


async def test_slack_retry_after_is_honoured_by_the_outbox(sl: SL) -> None:
    """Slack asks for five minutes: the event is not tried again before then (not 5 s later)."""
    sl.faults.add("/chat.postMessage", "429_long", times=1)
    await sl.start(sl.auth)
    assert await sl.app[keys.OUTBOX].dispatch_once() == 1
    [event] = await sl.events()
    assert event.done_at is None
    assert event.available_at - event.created_at >= timedelta(seconds=295), event.available_at
    assert "rate-limiting" in (await sl.integration(sl.alice.id)).last_error
    assert await sl.app[keys.OUTBOX].dispatch_once() == 0  # not due: nothing asked of Slack
    assert sl.faults.injected == ["429_long"] and sl.fake.posts == []
    async with sl.app[keys.DB].sessions() as s:
        await s.execute(update(TimerEventRow).values(available_at=TimerEventRow.created_at))
        await s.commit()
    assert await sl.app[keys.OUTBOX].dispatch_once() == 1
    assert len(sl.posts_to(CHANNEL)) == 1


@pytest.mark.parametrize("kind", SLACK_FAULTS)
async def test_slack_test_button_fault_is_bounded_and_said(sl: SL, kind: str) -> None:
    sl.faults.add("/auth.test", kind)
    with Timer() as took:
        response = await sl.client.post("/api/integrations/slack/test", headers=sl.auth)
    assert took.seconds < 3, took.seconds  # auth.test is not retried inline
    body = await response.json()
    assert response.status == 200 and body["ok"] is False and body["error"], body
    if kind == "429":
        assert body["code"] == "ratelimited"
    sl.faults.clear()
    body = await (await sl.client.post("/api/integrations/slack/test", headers=sl.auth)).json()
    assert body["ok"] is True, body


async def test_a_hanging_slack_holds_no_timer_and_no_other_user(sl: SL) -> None:
    sl.faults.add("/chat.postMessage", "hang", when=_to_alice)
    await sl.start(sl.auth)
    assert sl.faults.injected == []  # the start answered without a call to Slack
    await sl.start(sl.bob_auth)
    with Timer() as took:
        await sl.app[keys.OUTBOX].dispatch_due()  # both events: Alice's cut at the timeout
    assert took.seconds < 3 * TIMEOUT + 2, took.seconds
    assert len(sl.posts_to(BOB_CHANNEL)) == 1


# -- Google ------------------------------------------------------------------------------------


@dataclass
class GG:
    app: web.Application
    client: Any
    fake: FakeGoogle
    faults: Faults
    clock: Clock
    csrf: dict[str, str]  # username -> the session's CSRF token
    users: dict[str, Any]

    async def as_user(self, name: str) -> dict[str, str]:
        self.client.session.cookie_jar.clear()
        self.csrf[name] = await login(self.client, name)
        return {"X-CSRF-Token": self.csrf[name]}

    async def sync(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        response = await self.client.post("/api/integrations/google/sync", headers=headers)
        return response.status, await response.json()

    async def status(self) -> dict[str, Any]:
        return await (await self.client.get("/api/integrations/google/status")).json()

    async def entries(self, user: str) -> list[TimeEntry]:
        async with self.app[keys.DB].sessions() as s:
            query = select(TimeEntry).where(TimeEntry.user_id == self.users[user].id)
            return list((await s.execute(query.order_by(TimeEntry.id))).scalars())


@pytest.fixture
async def gg(aiohttp_client, aiohttp_server, settings) -> GG:  # type: ignore[no-untyped-def]
    fake, faults = FakeGoogle(), Faults()
    server = await aiohttp_server(faults.install(fake.app()))
    base = str(server.make_url("")).rstrip("/")
    clock = Clock(NOW)
    app = fast(create_app(_google_settings(settings, base), clock=clock))
    client = await aiohttp_client(app)
    made = Made(app)
    await made.app_settings("Europe/Rome")
    g = GG(app, client, fake, faults, clock, {}, {})
    project = await made.project("Website")
    for name, calendar in (("alice", "primary"), ("bob", "bob@example.com")):
        g.users[name] = await made.user(name)
        headers = await g.as_user(name)
        started = await client.get("/integrations/google/connect", allow_redirects=False)
        state = started.headers["Location"].split("state=", 1)[1].split("&", 1)[0]
        done = await client.get(
            "/integrations/google/callback",
            params={"state": state, "code": CODE},
            allow_redirects=False,
        )
        assert done.headers["Location"] == "/?google=connected"
        saved = await client.post(
            "/api/integrations/google/config",
            json={"default_project_id": project.id, "calendar_id": calendar},
            headers=headers,
        )
        assert saved.status == 200, await saved.text()
    await g.as_user("alice")
    return g


def _alice_calendar(request: web.Request, _body: bytes) -> bool:
    return "/calendars/primary/" in request.path


async def _expire(g: GG) -> None:
    """Tokens past their expiry: the next call refreshes first."""
    g.clock.now = NOW + timedelta(hours=2)
    g.fake.valid.discard(ACCESS)


@pytest.mark.parametrize("kind", ["500", "429", "hang", "close", "badjson", "invalid_grant"])
async def test_google_token_refresh_fault(gg: GG, kind: str) -> None:
    await _expire(gg)
    if kind == "invalid_grant":
        gg.fake.invalid_grant = True
    else:
        gg.faults.add("/token", kind, times=1)  # the POST is retried only on a 429
    headers = {"X-CSRF-Token": gg.csrf["alice"]}
    with Timer() as took:
        status, body = await gg.sync(headers)
    assert took.seconds < _max_wait(), took.seconds
    state = await gg.status()
    if kind == "429":  # Google asked for a second: waited, retried, done
        assert status == 200 and body["imported"] == 4, body
        assert took.seconds >= 1.0
        return
    assert body["ok"] is False and body["error"], body
    assert state["last_sync_status"] == "error" and state["last_error"], state
    assert state["reconnect_required"] is (kind == "invalid_grant"), state
    if kind == "invalid_grant":
        assert status == 409 and gg.fake.refreshes == 1
        return
    # A passing fault: the next sync refreshes and imports, once.
    status, body = await gg.sync(headers)
    assert status == 200 and body["imported"] == 4, body
    status, body = await gg.sync(headers)
    assert status == 200 and body["imported"] == 0, body
    assert len(await gg.entries("alice")) == 4
    assert (await gg.status())["last_sync_status"] == "success"


@pytest.mark.parametrize("kind", ["500", "429", "hang", "close", "badjson"])
async def test_google_events_list_fault_leaves_other_users_alone(
    gg: GG, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    gg.faults.add("/events", kind, method="GET", when=_alice_calendar)
    outcome = {"hang": "network_error", "close": "network_error", "badjson": "invalid_answer"}
    outcome = outcome.get(kind, "http_error")
    before = await metric(gg.client, "Google Calendar", outcome)
    with Timer() as took:
        report = await gg.app[keys.SCHEDULER].run(GOOGLE_JOB)
    assert took.seconds < _max_wait() + 3, took.seconds  # + up to 1 s of jitter per retry
    assert report.failed == 1 and report.succeeded == 1, report
    assert len(await gg.entries("bob")) == 4 and await gg.entries("alice") == []
    state = await gg.status()
    assert state["last_sync_status"] == "error" and state["last_error"], state
    assert state["reconnect_required"] is False
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(m.startswith("google") and "integration" in m for m in said), said
    assert ACCESS not in caplog.text
    # Google calls back off themselves (jittered; 429, 5xx and no answer): three tries, each
    # one a call in the metrics. A 200 with a broken body is not retried.
    tries = 1 if kind == "badjson" else 3
    assert await metric(gg.client, "Google Calendar", outcome) == before + tries
    assert gg.faults.injected.count(kind) == tries, gg.faults.injected
    gg.faults.clear()
    report = await gg.app[keys.SCHEDULER].run(GOOGLE_JOB)
    assert report.failed == 0, report
    assert len(await gg.entries("alice")) == 4 and len(await gg.entries("bob")) == 4
    await gg.app[keys.SCHEDULER].run(GOOGLE_JOB)
    assert len(await gg.entries("alice")) == 4 and len(await gg.entries("bob")) == 4


async def _finished_entry(g: GG) -> None:
    async with g.app[keys.DB].sessions() as s:
        project_id = (await s.execute(text("SELECT id FROM projects LIMIT 1"))).scalar_one()
        start, end = NOW.replace(tzinfo=None, hour=11), NOW.replace(tzinfo=None, hour=11, minute=50)
        s.add(
            TimeEntry(
                user_id=g.users["alice"].id, project_id=project_id, start_time=start,
                end_time=end, duration_seconds=3000, notes="Homepage", source="manual",
                billable=True, paid=False, created_at=start, updated_at=end,
            )
        )
        await s.commit()


@pytest.mark.parametrize(
    "kind", ["500", "429", "hang", "hang_after", "close", "badjson", "badjson_after"]
)
async def test_google_insert_fault_exports_once(gg: GG, kind: str) -> None:
    headers = {"X-CSRF-Token": gg.csrf["alice"]}
    saved = await gg.client.post(
        "/api/integrations/google/config", json={"sync_direction": "export"}, headers=headers
    )
    assert saved.status == 200
    await _finished_entry(gg)
    gg.clock.now = NOW + timedelta(hours=1)
    gg.faults.add("/events", kind, times=1, method="POST")
    with Timer() as took:
        status, body = await gg.sync(headers)
    assert took.seconds < _max_wait(), took.seconds
    # Event ids are deterministic, so even the insert is retried: a 409 on the retry means
    # "already there" (hang_after: Google did insert, its answer was lost).
    for _ in range(2):
        gg.clock.now += timedelta(minutes=5)
        status, body = await gg.sync(headers)
        assert status == 200, body
    assert len(gg.fake.inserted) == 1, gg.fake.inserted
    inserts = [d for p, m, d in gg.fake.calls if m == "POST" and p.endswith("/events")]
    assert len(inserts) <= 3, inserts
    assert (await gg.status())["last_sync_status"] == "success"


# -- the knob ----------------------------------------------------------------------------------


async def test_the_outbound_timeout_is_per_client_and_reported() -> None:
    from gateway.connectors.http import TIMEOUT_SECONDS, HttpClient

    assert HttpClient(None).timeout == TIMEOUT_SECONDS == 10.0
    client = HttpClient(None, timeout=0.25)
    assert client.timeout == 0.25
    assert re.fullmatch(r"timed out after 0\.25 s", f"timed out after {client.timeout:g} s")
