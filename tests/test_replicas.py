"""Two real gateway processes on one PostgreSQL database, requests spread across both.

DESIGN §1 (scale-out): no state that matters lives in a process, so a delivery, a timer event,
a cron slot, a session and an OAuth round trip give the same result whichever replica serves
them, and a replica killed mid-notification loses nothing. Each test gets a fresh database and
its own pair of `python -m gateway` processes; the providers are local fakes in the test loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from yarl import URL

from gateway import keys
from gateway.connectors.github.core import sign
from gateway.db.database import Database
from gateway.db.migrate import upgrade
from gateway.db.models import JobSlot, Project, Task, TimerEventRow, User
from tests.conftest import (
    CSRF_RE,
    ON_POSTGRES,
    PASSWORD,
    REPO,
    Made,
    _drop_pg_database,
    fresh_database_url,
)
from tests.fakes import FakeGitHub, payload
from tests.test_cli import free_port
from tests.test_google import CODE, FakeGoogle
from tests.test_slack import BOT_TOKEN, CHANNEL, SECRET, FakeSlack, fixture

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not ON_POSTGRES, reason="replicas share a PostgreSQL database"),
]

LEASE = 10  # GATEWAY_EVENT_LEASE for these tests: its minimum


async def until(check: Callable[[], Any], seconds: float, step: float = 0.1) -> Any:
    """Poll `check()` (sync or async) until truthy or `seconds` pass; its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


# -- the fakes -------------------------------------------------------------------------------


class ReplicaSlack(FakeSlack):
    """FakeSlack served under /<replica>/… so each post says which replica sent it; can hold
    the first chat.postMessage until released (the sender is killed meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: list[str] = []
        self.hold_first = False
        self.held: list[str] = []
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{replica}/auth.test", self.auth_test)
        app.router.add_post("/{replica}/chat.postMessage", self.post_message)
        return app

    async def post_message(self, request: web.Request) -> web.Response:
        replica = request.match_info["replica"]
        if self.hold_first and not self.held:
            self.held.append(replica)
            # The sender dies while waiting: whatever is answered goes nowhere, nothing posted.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 60)
            return web.json_response({"ok": False, "error": "request_timeout"})
        response = await super().post_message(request)
        if response.status == 200:
            self.senders.append(replica)
        return response

    def texts(self) -> list[str]:
        return [p.get("text", "") for p in self.posts]


# -- the replicas ------------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    tmp: Path
    database_url: str
    db: Database
    made: Made
    env: dict[str, str]
    http: aiohttp.ClientSession
    replicas: list[Replica] = field(default_factory=list)

    async def start(self, name: str, **extra: str) -> Replica:
        port = free_port()
        log = self.tmp / f"replica-{name}.log"
        with log.open("wb") as out:
            proc = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "gateway"],
                cwd=REPO,
                env={**self.env, "GATEWAY_PORT": str(port), **extra},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        replica = Replica(name, proc, port, log)
        self.replicas.append(replica)
        return replica

    async def ready(self, *replicas: Replica) -> None:
        for replica in replicas:
            deadline = time.monotonic() + 60
            while True:
                assert replica.proc.poll() is None, replica.output()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self.http.get(f"{replica.url}/readyz") as r:
                        if r.status == 200:
                            break
                assert time.monotonic() < deadline, f"{replica.name} not ready\n{replica.output()}"
                await asyncio.sleep(0.1)

    async def pair(self, **extra: str) -> tuple[Replica, Replica]:
        a = await self.start("a", **extra)
        b = await self.start("b", **extra)
        await self.ready(a, b)
        return a, b

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.proc.poll() is None:
                replica.proc.terminate()
        for replica in self.replicas:
            try:
                replica.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait(timeout=5)

    async def user_with_token(self, name: str, **kwargs: Any) -> tuple[Any, dict[str, str]]:
        user = await self.made.user(name, **kwargs)
        return user, {"Authorization": f"Bearer {await self.made.token(user)}"}

    async def post(self, replica: Replica, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.post(replica.url + path, **kwargs) as r:
            return r.status, await _body(r)

    async def get(self, replica: Replica, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.get(replica.url + path, **kwargs) as r:
            return r.status, await _body(r)


async def _body(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    try:
        return json.loads(text)
    except ValueError:
        return text


def _env(tmp: Path, database_url: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_", "GOOGLE_", "SLACK_"))
        and not k.startswith(("GITHUB_", "TIMETRACKER_"))
    }
    base.update(
        DATABASE_URL=database_url,
        SETTINGS_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        GATEWAY_DATA_DIR=str(tmp / "data"),
        GATEWAY_AUTO_MIGRATE="0",
        GATEWAY_SCHEDULER="0",
        GATEWAY_EVENT_LEASE=str(LEASE),
        GATEWAY_SHUTDOWN_TIMEOUT="1",
        # Behind one load balancer: the same public URL, whichever replica answers.
        GATEWAY_PUBLIC_URL="http://127.0.0.1:8080",
        PYTHONPATH=str(REPO),
        TZ="UTC",
    )
    return base


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    url, name = await fresh_database_url(tmp_path)
    engine = create_async_engine(url)
    await upgrade(engine)
    await engine.dispose()
    db = Database(url, env_tz="UTC")
    http = aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # 127.0.0.1: one host, two ports
        timeout=aiohttp.ClientTimeout(total=30),
    )
    made = Made({keys.DB: db})
    # Users exist before the replicas start: no first-run admin is made.
    await made.user("admin", role="admin")
    c = Cluster(tmp_path, url, db, made, _env(tmp_path, url), http)
    try:
        yield c
    finally:
        c.stop_all()
        await http.close()
        await db.dispose()
        if name:
            await _drop_pg_database(name)


@pytest.fixture
async def slack(aiohttp_server) -> tuple[ReplicaSlack, str]:  # type: ignore[no-untyped-def]
    fake = ReplicaSlack()
    server = await aiohttp_server(fake.app())
    yield fake, str(server.make_url("")).rstrip("/")
    fake.release.set()


def slack_env(base: str, name: str) -> dict[str, str]:
    return {"SLACK_API_URL": f"{base}/{name}"}


async def configure_slack(c: Cluster, replica: Replica, auth: dict[str, str], **changes: Any):  # type: ignore[no-untyped-def]
    body = {
        "bot_token": BOT_TOKEN,
        "signing_secret": SECRET,
        "channel_id": CHANNEL,
        "linked_slack_user_id": "U2147483697",
        **changes,
    }
    status, answer = await c.post(
        replica, "/api/integrations/slack/config", json=body, headers=auth
    )
    assert status == 200 and answer["is_active"] is True, answer
    return answer


async def events(c: Cluster) -> list[TimerEventRow]:
    async with c.db.sessions() as s:
        return list((await s.execute(select(TimerEventRow).order_by(TimerEventRow.id))).scalars())


# -- GitHub ------------------------------------------------------------------------------------


async def test_the_same_delivery_to_both_replicas_makes_one_task(
    cluster: Cluster, aiohttp_server
) -> None:  # type: ignore[no-untyped-def]
    c = cluster
    fake = FakeGitHub()
    server = await aiohttp_server(fake.app())
    a, b = await c.pair(GITHUB_API_URL=str(server.make_url("")).rstrip("/"))
    owner, auth = await c.user_with_token("alice", role="admin")
    project = await c.made.project("Website")
    status, saved = await c.post(
        a,
        "/api/integrations/github/config",
        json={
            "repo_owner": "Codertocat",
            "repo_name": "Hello-World",
            "default_project_id": project.id,
            "github_token": fake.token,
        },
        headers=auth,
    )
    assert status == 200 and saved["is_active"], saved
    secret = saved["webhook_secret"]

    def delivery(number: int) -> tuple[bytes, dict[str, str]]:
        body = payload("issues.opened")
        body["issue"].update(number=number, id=1000 + number, title=f"Issue {number}")
        raw = json.dumps(body).encode()
        return raw, {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, raw),
        }

    hook = "/api/integrations/github/webhook"
    answers = []
    for number in range(1, 9):
        raw, headers = delivery(number)
        # The same delivery (same id) to both replicas at once, twice over.
        answers += await asyncio.gather(
            *(c.post(r, hook, data=raw, headers=headers) for r in (a, b, a, b))
        )
    assert [s for s, _ in answers] == [200] * len(answers), answers
    outcomes = [body.get("task") or ("duplicate" if body.get("duplicate") else body) for _, body in answers]
    assert outcomes.count("created") == 8, outcomes
    assert outcomes.count("duplicate") == 24, outcomes
    # Another delivery of the same issue (a new id, as on a redelivery) still makes no second.
    raw, headers = delivery(1)
    second = dict(headers, **{"X-GitHub-Delivery": str(uuid.uuid4())})
    both = await asyncio.gather(
        c.post(a, hook, data=raw, headers=headers), c.post(b, hook, data=raw, headers=second)
    )
    assert [s for s, _ in both] == [200, 200], both
    async with c.db.sessions() as s:
        tasks = list((await s.execute(select(Task).order_by(Task.id))).scalars())
    assert sorted(t.external_ref for t in tasks) == sorted(
        f"github_issue_{n}" for n in range(1, 9)
    )
    assert {t.created_by for t in tasks} == {owner.id}


# -- sessions and OAuth ------------------------------------------------------------------------


async def login(c: Cluster, replica: Replica, username: str) -> str:
    status, page = await c.get(replica, "/login")
    match = CSRF_RE.search(page)
    assert status == 200 and match, page
    async with c.http.post(
        replica.url + "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": match.group(1)},
        allow_redirects=False,
    ) as r:
        assert r.status == 302, await r.text()
    status, session = await c.get(replica, "/api/session")
    assert status == 200, session
    return session["csrf_token"]


async def test_a_session_made_on_one_works_on_the_other(cluster: Cluster) -> None:
    c = cluster
    a, b = await c.pair()
    await c.made.user("alice")
    project = await c.made.project("Website")
    csrf = await login(c, a, "alice")
    assert any(cookie.key == "tt_gateway_session" for cookie in c.http.cookie_jar)
    status, session = await c.get(b, "/api/session")
    assert status == 200 and session["user"]["username"] == "alice", session
    assert session["csrf_token"] == csrf
    # A write with the session's CSRF token, on the other replica.
    status, started = await c.post(
        b, "/api/timer/start", json={"project_id": project.id}, headers={"X-CSRF-Token": csrf}
    )
    assert status == 201, started
    status, running = await c.get(a, "/api/timer/status")
    assert status == 200 and running["active"] is True, running
    # Signing out on B ends the session on A too (the cookie is the whole session).
    async with c.http.post(
        b.url + "/logout", data={"csrf_token": csrf}, allow_redirects=False
    ) as r:
        assert r.status in (302, 303), await r.text()
    status, _ = await c.get(a, "/api/session")
    assert status == 401


async def test_oauth_started_on_one_completes_on_the_other(
    cluster: Cluster, aiohttp_server
) -> None:  # type: ignore[no-untyped-def]
    c = cluster
    fake = FakeGoogle()
    server = await aiohttp_server(fake.app())
    base = str(server.make_url("")).rstrip("/")
    a, b = await c.pair(
        GOOGLE_CLIENT_ID="123-abc.apps.googleusercontent.com",
        GOOGLE_CLIENT_SECRET="GOCSPX-test-secret",
        GOOGLE_AUTH_URL=base + "/auth",
        GOOGLE_TOKEN_URL=base + "/token",
        GOOGLE_REVOKE_URL=base + "/revoke",
        GOOGLE_USERINFO_URL=base + "/userinfo",
        GOOGLE_CALENDAR_API_URL=base + "/calendar/v3",
    )
    await c.made.user("alice")
    await login(c, a, "alice")
    async with c.http.get(a.url + "/integrations/google/connect", allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        consent = URL(r.headers["Location"])
    assert str(consent.with_query(None)) == base + "/auth"
    # Google sends the browser back through the load balancer: this time to B.
    async with c.http.get(
        b.url + "/integrations/google/callback",
        params={"state": consent.query["state"], "code": CODE},
        allow_redirects=False,
    ) as r:
        assert r.status == 302, await r.text()
        assert r.headers["Location"] == "/?google=connected"
    [exchange] = fake.of("/token")
    assert exchange["grant_type"] == "authorization_code" and exchange["code_verifier"]
    for replica in (a, b):
        status, body = await c.get(replica, "/api/integrations/google/status")
        assert status == 200 and body["connected"] is True, body
        assert body["email"] == "alice@example.com"
    # The state was single-use: replaying the callback on A does not connect twice.
    async with c.http.get(
        a.url + "/integrations/google/callback",
        params={"state": consent.query["state"], "code": CODE},
        allow_redirects=False,
    ) as r:
        assert r.status == 302 and "connected" not in r.headers["Location"]
    assert len(fake.of("/token")) == 1


# -- timer notifications from the outbox -------------------------------------------------------


async def test_a_timer_started_on_a_and_stopped_on_b_is_announced_once_each(
    cluster: Cluster, slack
) -> None:  # type: ignore[no-untyped-def]
    c = cluster
    fake, base = slack
    a = await c.start("a", **slack_env(base, "a"))
    b = await c.start("b", **slack_env(base, "b"))
    await c.ready(a, b)
    alice, auth = await c.user_with_token("alice", full_name="Alice Liddell")
    project = await c.made.project("Website Redesign")
    await configure_slack(c, a, auth)
    for _round in range(3):
        status, body = await c.post(
            a, "/api/timer/start", json={"project_id": project.id}, headers=auth
        )
        assert status == 201, body
        status, body = await c.post(b, "/api/timer/stop", headers=auth)
        assert status == 200, body
    await until(lambda: len(fake.posts) >= 6, 30)
    await asyncio.sleep(2 * 1.5)  # anything still pending would arrive by now (LISTEN wakes)
    texts = fake.texts()
    assert len(texts) == 6, texts
    assert sum("started a timer" in t for t in texts) == 3, texts
    assert sum("stopped a timer" in t for t in texts) == 3, texts
    rows = await events(c)
    assert len(rows) == 6 and all(r.done_at is not None for r in rows)
    assert all(r.done_subscribers == "slack" and r.attempts == 1 for r in rows)
    # Both replicas dispatch: whoever was woken first took each event (no assertion on who).
    assert set(fake.senders) <= {"a", "b"}


async def test_a_replica_killed_mid_notification_loses_nothing(
    cluster: Cluster, slack
) -> None:  # type: ignore[no-untyped-def]
    c = cluster
    fake, base = slack
    fake.hold_first = True
    replicas = {
        "a": await c.start("a", **slack_env(base, "a")),
        "b": await c.start("b", **slack_env(base, "b")),
    }
    await c.ready(*replicas.values())
    alice, auth = await c.user_with_token("alice", full_name="Alice Liddell")
    project = await c.made.project("Website Redesign")
    await configure_slack(c, replicas["a"], auth)
    status, body = await c.post(
        replicas["b"], "/api/timer/start", json={"project_id": project.id}, headers=auth
    )
    assert status == 201, body
    assert await until(lambda: fake.held, 15), "no replica called Slack"
    [victim] = fake.held
    survivor = "b" if victim == "a" else "a"
    replicas[victim].proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    replicas[victim].proc.wait(timeout=10)
    [row] = await events(c)
    assert row.done_at is None and row.locked_until is not None and row.attempts == 1
    # The survivor takes the event over once the dead replica's lease has run out.
    assert await until(lambda: fake.posts, LEASE + 20), replicas[survivor].output()
    took = time.monotonic() - killed_at
    assert took < LEASE + 10, took
    fake.release.set()
    await asyncio.sleep(2)
    assert len(fake.posts) == 1 and fake.senders == [survivor]
    assert "started a timer" in fake.texts()[0]
    [row] = await events(c)
    assert row.done_at is not None and row.attempts == 2 and row.done_subscribers == "slack"
    # The survivor still serves, and the next event is announced at once.
    status, body = await c.post(replicas[survivor], "/api/timer/stop", headers=auth)
    assert status == 200, body
    assert await until(lambda: len(fake.posts) >= 2, 15)
    assert "stopped a timer" in fake.texts()[1]


# -- cron slots --------------------------------------------------------------------------------

SLOT_RUNNER = """
import asyncio, json, sys
from datetime import datetime
from gateway.services import build_services
from gateway.settings import Settings

async def main():
    services = build_services(Settings.from_env())
    outcomes = []
    async with services.running(dispatch_events=False):
        for iso in sys.argv[2:]:
            report = await services.scheduler.run(sys.argv[1], slot=datetime.fromisoformat(iso))
            outcomes.append(report.outcome)
    print(json.dumps(outcomes))

asyncio.run(main())
"""


async def slot_process(
    c: Cluster, job: str, slots: list[str], **extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", SLOT_RUNNER, job, *slots,
        cwd=REPO,
        env={**c.env, **extra},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def outcomes(proc: asyncio.subprocess.Process) -> list[str]:
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def run_slots(c: Cluster, job: str, slots: list[str], **extra: str) -> list[list[str]]:
    """The same slots of `job` run by two processes at once, as two replicas' ticks would."""

    async def one() -> list[str]:
        return await outcomes(await slot_process(c, job, slots, **extra))

    return list(await asyncio.gather(one(), one()))


def _slots(now: datetime, count: int) -> list[str]:
    base = now.replace(second=0, microsecond=0, minute=now.minute - now.minute % 30)
    return [(base - timedelta(minutes=30 * i)).isoformat() for i in range(count)]


async def test_each_cron_slot_runs_once_and_the_summary_is_posted_once(
    cluster: Cluster, slack
) -> None:  # type: ignore[no-untyped-def]
    c = cluster
    fake, base = slack
    # One replica serves the API; the jobs run in two other processes.
    [api] = [await c.start("api", **slack_env(base, "api"))]
    await c.ready(api)
    alice, auth = await c.user_with_token("alice", full_name="Alice Liddell")
    await configure_slack(
        c, api, auth, daily_summary=True, daily_summary_time=datetime.now(UTC).strftime("%H:%M")
    )
    slots = _slots(datetime.now(UTC), 4)
    ran = await run_slots(c, "slack_daily_summary", slots, **slack_env(base, "job"))
    for i in range(len(slots)):
        per_slot = [outcomes[i] for outcomes in ran]
        assert per_slot.count("skipped") == 1 and "error" not in per_slot, ran
    await until(lambda: fake.posts, 5)
    assert len(fake.posts) == 1 and "Daily summary" in fake.texts()[0], fake.texts()
    # The same slots again: all already ran.
    again = await run_slots(c, "slack_daily_summary", slots, **slack_env(base, "job"))
    assert again == [["skipped"] * 4] * 2
    assert len(fake.posts) == 1
    # A job without its own de-duplication: the slot alone keeps it to one run.
    pruned = await run_slots(c, "timer_events_prune", slots)
    assert sorted(o for outcomes in pruned for o in outcomes) == ["skipped"] * 4 + ["success"] * 4
    async with c.db.sessions() as s:
        claimed = (await s.execute(select(func.count()).select_from(JobSlot))).scalar()
    assert claimed == 8


async def test_a_replica_killed_mid_summary_loses_nothing(
    cluster: Cluster, slack
) -> None:  # type: ignore[no-untyped-def]
    c = cluster
    fake, base = slack
    fake.hold_first = True
    api = await c.start("api", **slack_env(base, "api"))
    await c.ready(api)
    alice, auth = await c.user_with_token("alice", full_name="Alice Liddell")
    await configure_slack(
        c, api, auth, daily_summary=True, daily_summary_time=datetime.now(UTC).strftime("%H:%M")
    )
    slot, next_slot = _slots(datetime.now(UTC) + timedelta(minutes=30), 2)[::-1]
    victim = await slot_process(c, "slack_daily_summary", [slot], **slack_env(base, "victim"))
    try:
        assert await until(lambda: fake.held, 30), "the job never called Slack"
    finally:
        victim.send_signal(signal.SIGKILL)
        await asyncio.wait_for(victim.wait(), 10)
    killed_at = time.monotonic()
    assert fake.held == ["victim"] and fake.posts == []
    # Another replica's tick for the same slot skips it (the slot was claimed) ...
    assert await outcomes(
        await slot_process(c, "slack_daily_summary", [slot], **slack_env(base, "other"))
    ) == ["skipped"]
    # ... and its next tick, once the dead run's claim is older than the lease, posts it.
    await asyncio.sleep(max(LEASE - (time.monotonic() - killed_at), 0) + 0.5)
    assert await outcomes(
        await slot_process(c, "slack_daily_summary", [next_slot], **slack_env(base, "other"))
    ) == ["success"]
    fake.release.set()
    assert len(fake.posts) == 1 and fake.senders == ["other"], fake.texts()
    assert "Daily summary" in fake.texts()[0]
    # Done: later ticks post nothing more.
    assert await outcomes(
        await slot_process(c, "slack_daily_summary", [next_slot, slot], **slack_env(base, "x"))
    ) == ["skipped", "skipped"]
    later = (datetime.fromisoformat(next_slot) + timedelta(minutes=30)).isoformat()
    await outcomes(await slot_process(c, "slack_daily_summary", [later], **slack_env(base, "x")))
    assert len(fake.posts) == 1


async def test_two_replicas_with_schedulers_start_and_skip_ticks_cleanly(
    cluster: Cluster,
) -> None:
    """Both schedulers on: both start, both list the jobs, neither fails at start or stop."""
    c = cluster
    a, b = await c.pair(GATEWAY_SCHEDULER="1")
    for replica in (a, b):
        status, _ = await c.get(replica, "/readyz")
        assert status == 200
    c.stop_all()
    for replica in (a, b):
        assert replica.proc.returncode == 0, replica.output()
        assert re.search(r"scheduled slack_daily_summary", replica.output()), replica.output()
        assert "Traceback" not in replica.output()


async def test_two_replicas_starting_at_once_on_an_empty_database(tmp_path: Path) -> None:
    """Both migrate (serialised) and run the first-run set-up: one admin, one project."""
    url, name = await fresh_database_url(tmp_path)
    db = Database(url, env_tz="UTC")
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    c = Cluster(tmp_path, url, db, Made({keys.DB: db}), _env(tmp_path, url), http)
    try:
        a, b = await c.pair(GATEWAY_AUTO_MIGRATE="1")
        for replica in (a, b):
            status, _ = await c.get(replica, "/readyz")
            assert status == 200
        async with db.sessions() as s:
            users = (await s.execute(select(User.username))).scalars().all()
            projects = (await s.execute(select(Project.name))).scalars().all()
        assert users == ["admin"] and projects == ["General"], (users, projects)
        c.stop_all()
        printed = [r.output().count("First run: created user 'admin'") for r in (a, b)]
        assert sorted(printed) == [0, 1], printed
    finally:
        c.stop_all()
        await http.close()
        await db.dispose()
        if name:
            await _drop_pg_database(name)


def test_the_fixtures_used_here_exist() -> None:
    assert fixture("chat.postMessage.ok.json")["ok"] is True
