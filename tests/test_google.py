"""Google Calendar connector end to end: a local fake Google serving the recorded answers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import delete, func, select, update
from yarl import URL

from gateway import keys
from gateway.app import create_app
from gateway.connectors.google import KEY, core
from gateway.connectors.google.service import JOB
from gateway.db.models import CalendarLink, Integration, TimeEntry
from tests.conftest import FIXTURES, ON_POSTGRES, REPO, Made, login

GOOGLE = FIXTURES / "google"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # after every event of the recorded pages
CODE = "4/0AeaYSHexamplecode"
ACCESS = "ya29.a0AfH6SMBx-example-access"
REFRESHED = "ya29.a0AfH6SMBx-example-refreshed"
REFRESH = "1//0gexample-refresh-token"
PAGE2_TOKEN = "CigKGjRhbmN0ZXN0cGFnZXRva2Vu"
CALLBACK = "/integrations/google/callback"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((GOOGLE / f"{name}.json").read_text())


class FakeGoogle:
    """OAuth token, revoke and userinfo endpoints and the Calendar API, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.page1 = fixture("events.list.page1")
        self.page2 = fixture("events.list.page2")
        self.valid = {ACCESS}
        self.invalid_grant = False
        self.unauthorized_once = False
        self.refresh_delay = 0.0
        self.inserted: dict[str, dict[str, Any]] = {}
        self.list_status: int | None = None
        self.rate_limited: list[int] = []  # statuses to answer first, one per call
        self.without_refresh_token = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_post("/revoke", self.revoke)
        app.router.add_get("/userinfo", self.userinfo)
        app.router.add_get("/calendar/v3/calendars/{cal}/events", self.list_events)
        app.router.add_post("/calendar/v3/calendars/{cal}/events", self.insert_event)
        app.router.add_patch("/calendar/v3/calendars/{cal}/events/{event}", self.update_event)
        app.router.add_get("/calendar/v3/users/me/calendarList", self.calendar_list)
        return app

    def of(self, path: str) -> list[dict[str, Any]]:
        return [data for p, _m, data in self.calls if p == path]

    @property
    def refreshes(self) -> int:
        return sum(1 for d in self.of("/token") if d.get("grant_type") == "refresh_token")

    def _authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.valid

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.calls.append((request.path, "POST", form))
        if form.get("grant_type") == "authorization_code":
            if form.get("code") != CODE or not form.get("code_verifier"):
                return web.json_response(fixture("token.invalid_grant"), status=400)
            answer = fixture("token.authorization_code")
            if self.without_refresh_token:
                del answer["refresh_token"]
            return web.json_response(answer)
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        if self.invalid_grant or form.get("refresh_token") != REFRESH:
            return web.json_response(fixture("token.invalid_grant"), status=400)
        self.valid.add(REFRESHED)
        return web.json_response(fixture("token.refresh"))

    async def revoke(self, request: web.Request) -> web.Response:
        self.calls.append((request.path, "POST", dict(await request.post())))
        return web.Response(status=200)

    async def userinfo(self, request: web.Request) -> web.Response:
        self.calls.append((request.path, "GET", {}))
        if not self._authorised(request):
            return web.json_response(fixture("error.401"), status=401)
        return web.json_response(fixture("userinfo"))

    async def list_events(self, request: web.Request) -> web.Response:
        self.calls.append((request.path, "GET", dict(request.query)))
        if self.unauthorized_once:
            self.unauthorized_once = False
            self.valid.discard(ACCESS)
            return web.json_response(fixture("error.401"), status=401)
        if not self._authorised(request):
            return web.json_response(fixture("error.401"), status=401)
        if self.list_status is not None:
            return web.json_response(fixture("error.429"), status=self.list_status)
        if self.rate_limited:
            status = self.rate_limited.pop(0)
            body = fixture("error.429")
            if status == 403:  # Calendar's per-user limit: a 403 whose body says so
                body["error"]["errors"][0]["reason"] = "userRateLimitExceeded"
                body["error"]["code"] = 403
            return web.json_response(body, status=status)
        if request.query.get("pageToken") == PAGE2_TOKEN:
            return web.json_response(self.page2)
        return web.json_response(self.page1)

    async def insert_event(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((request.path, "POST", body))
        if not self._authorised(request):
            return web.json_response(fixture("error.401"), status=401)
        if body.get("id") in self.inserted:
            return web.json_response(fixture("error.409.duplicate"), status=409)
        self.inserted[body["id"]] = body
        answer = fixture("events.insert.ok")
        answer.update(id=body["id"], summary=body["summary"])
        return web.json_response(answer)

    async def calendar_list(self, request: web.Request) -> web.Response:
        self.calls.append((request.path, "GET", dict(request.query)))
        if not self._authorised(request):
            return web.json_response(fixture("error.401"), status=401)
        assert request.query["minAccessRole"] == "writer"
        return web.json_response(
            {
                "kind": "calendar#calendarList",
                "items": [
                    {"id": "team@group.calendar.google.com", "summary": "Team"},
                    {"id": "alice@example.com", "summary": "Alice", "primary": True},
                    {"summary": "no id: skipped"},
                ],
            }
        )

    async def update_event(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((request.path, "PATCH", body))
        if not self._authorised(request):
            return web.json_response(fixture("error.401"), status=401)
        event_id = request.match_info["event"]
        if event_id not in self.inserted:
            return web.json_response({"error": {"code": 404, "message": "Not Found"}}, status=404)
        self.inserted[event_id] = {**self.inserted[event_id], **body, "id": event_id}
        return web.json_response({**fixture("events.insert.ok"), "id": event_id})

    def event(self, event_id: str) -> dict[str, Any]:
        for item in self.page1["items"] + self.page2["items"]:
            if item["id"] == event_id:
                return item
        raise KeyError(event_id)

    def move(self, event_id: str, start: str, end: str) -> dict[str, Any]:
        item = self.event(event_id)
        item["start"]["dateTime"], item["end"]["dateTime"] = start, end
        return item

    def cancel(self, event_id: str) -> None:
        item = self.event(event_id)
        item.clear()
        item.update(id=event_id, status="cancelled", kind="calendar#event")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class G:
    app: web.Application
    client: Any
    made: Made
    fake: FakeGoogle
    clock: Clock
    csrf: str
    user: Any
    project: Any

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.app[keys.DB]

    async def connect(self) -> None:
        started = await self.client.get("/integrations/google/connect", allow_redirects=False)
        assert started.status == 302, await started.text()
        state = URL(started.headers["Location"]).query["state"]
        done = await self.client.get(
            "/integrations/google/callback",
            params={"state": state, "code": CODE},
            allow_redirects=False,
        )
        assert done.status == 302
        assert done.headers["Location"] == "/?google=connected"

    async def save(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/api/integrations/google/config", json=body, headers=self.headers
        )
        assert response.status == 200, await response.text()
        return await response.json()

    async def sync(self, expect: int = 200) -> dict[str, Any]:
        response = await self.client.post("/api/integrations/google/sync", headers=self.headers)
        assert response.status == expect, await response.text()
        return await response.json()

    async def status(self) -> dict[str, Any]:
        response = await self.client.get("/api/integrations/google/status")
        assert response.status == 200
        return await response.json()

    async def row(self) -> Integration:
        async with self.db.sessions() as s:
            return (await s.execute(select(Integration))).scalar_one()

    async def entries(self) -> list[TimeEntry]:
        async with self.db.sessions() as s:
            return list((await s.execute(select(TimeEntry).order_by(TimeEntry.id))).scalars())

    def by_event(self, entries: list[TimeEntry]) -> dict[str, TimeEntry]:
        return {core.marked_event_ids(e.notes)[0]: e for e in entries if e.notes}


def _google_settings(settings, base: str, *, oauth: bool = True):  # type: ignore[no-untyped-def]
    return replace(
        settings,
        google_client_id="123-abc.apps.googleusercontent.com" if oauth else None,
        google_client_secret="GOCSPX-test-secret" if oauth else None,
        google_auth_url=base + "/auth",
        google_token_url=base + "/token",
        google_revoke_url=base + "/revoke",
        google_userinfo_url=base + "/userinfo",
        google_calendar_api_url=base + "/calendar/v3",
    )


@pytest.fixture
async def fake_google(aiohttp_server):  # type: ignore[no-untyped-def]
    fake = FakeGoogle()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def g(aiohttp_client, settings, fake_google) -> G:  # type: ignore[no-untyped-def]
    fake, base = fake_google
    clock = Clock(NOW)
    app = create_app(_google_settings(settings, base), clock=clock)
    client = await aiohttp_client(app)
    made = Made(app)
    await made.app_settings("Europe/Rome")
    user = await made.user("alice")
    project = await made.project("Website")
    csrf = await login(client)
    return G(app, client, made, fake, clock, csrf, user, project)


@pytest.fixture
async def connected(g: G) -> G:
    await g.connect()
    await g.save(default_project_id=g.project.id)
    return g


# -- OAuth ------------------------------------------------------------------------------------


async def test_oauth_round_trip_stores_tokens_encrypted(g: G) -> None:
    started = await g.client.get("/integrations/google/connect", allow_redirects=False)
    assert started.status == 302
    url = URL(started.headers["Location"])
    assert str(url.with_query(None)).endswith("/auth")
    q = url.query
    assert q["client_id"] == "123-abc.apps.googleusercontent.com"
    assert q["redirect_uri"] == "http://127.0.0.1:8080/integrations/google/callback"
    assert q["response_type"] == "code"
    assert q["scope"].split() == [
        "openid", "email", "https://www.googleapis.com/auth/calendar.events"
    ]
    assert (q["access_type"], q["prompt"], q["include_granted_scopes"]) == (
        "offline", "consent", "true"
    )
    assert q["code_challenge_method"] == "S256"

    done = await g.client.get(
        "/integrations/google/callback",
        params={"state": q["state"], "code": CODE},
        allow_redirects=False,
    )
    assert done.status == 302 and done.headers["Location"] == "/?google=connected"

    [exchange] = g.fake.of("/token")
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["redirect_uri"] == q["redirect_uri"]
    assert core.pkce_challenge(exchange["code_verifier"]) == q["code_challenge"]

    row = await g.row()
    assert row.is_active is True
    raw = json.dumps(row.config)
    assert ACCESS not in raw and REFRESH not in raw
    assert row.config["access_token"].startswith("enc:v1:")
    assert row.config["refresh_token"].startswith("enc:v1:")
    config = g.app[KEY].store.config(row)
    assert config.secret("access_token") == ACCESS and config.secret("refresh_token") == REFRESH
    assert row.config["email"] == "alice@example.com"
    expiry = datetime.fromisoformat(row.config["token_expiry"])
    assert expiry == NOW + timedelta(seconds=3599)
    assert datetime.fromisoformat(row.config["connected_at"]) == NOW

    status = await g.status()
    assert status["connected"] is True and status["is_active"] is True
    assert status["email"] == "alice@example.com"
    assert status["has_access_token"] is True and status["has_refresh_token"] is True
    assert status["reconnect_required"] is False and status["oauth_configured"] is True
    assert status["connect_url"] == "http://127.0.0.1:8080/integrations/google/connect"
    assert status["calendar_id"] == "primary" and status["sync_days_back"] == 7
    text = json.dumps(status)
    assert ACCESS not in text and REFRESH not in text and "enc:v1:" not in text
    assert "default_project_id" in status["missing"]  # needed before events can be imported


async def _start(g: G) -> str:
    started = await g.client.get("/integrations/google/connect", allow_redirects=False)
    return URL(started.headers["Location"]).query["state"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"error": "access_denied", "state": "{state}"}, "access_denied"),
        ({"code": CODE}, "state_missing"),
        ({"state": "not-the-state", "code": CODE}, "state_mismatch"),
        ({"state": "{state}"}, "code_missing"),
    ],
)
async def test_callback_guards(g: G, params: dict[str, str], reason: str) -> None:
    state = await _start(g)
    query = {k: v.replace("{state}", state) for k, v in params.items()}
    done = await g.client.get(
        "/integrations/google/callback", params=query, allow_redirects=False
    )
    assert done.status == 302
    assert done.headers["Location"] == f"/?google_error={reason}"
    assert g.fake.of("/token") == []
    status = await g.status()
    assert status["has_refresh_token"] is False and status["connected"] is False
    # The page names the reason in words.
    page = await g.client.get("/", params={"google_error": reason})
    assert core.CALLBACK_MESSAGES[reason].split(";")[0][:30] in (await page.text()).replace(
        "&#39;", "'"
    )


async def test_a_state_is_single_use(g: G) -> None:
    state = await _start(g)
    cookie = g.client.session.cookie_jar.filter_cookies(g.client.make_url("/"))
    old = cookie["tt_gateway_session"].value
    params = {"state": state, "code": CODE}
    first = await g.client.get(CALLBACK, params=params, allow_redirects=False)
    assert first.headers["Location"] == "/?google=connected"
    again = await g.client.get(CALLBACK, params=params, allow_redirects=False)
    assert again.headers["Location"] == "/?google_error=state_unknown"
    # A replayed cookie that still holds the state: refused across replicas by the database.
    g.client.session.cookie_jar.update_cookies(
        {"tt_gateway_session": old}, response_url=g.client.make_url("/")
    )
    replay = await g.client.get(CALLBACK, params=params, allow_redirects=False)
    assert replay.headers["Location"] == "/?google_error=state_reused"
    assert len(g.fake.of("/token")) == 1


async def test_state_expires(g: G) -> None:
    state = await _start(g)
    g.clock.now = NOW + timedelta(minutes=11)
    done = await g.client.get(
        "/integrations/google/callback", params={"state": state, "code": CODE},
        allow_redirects=False,
    )
    assert done.headers["Location"] == "/?google_error=state_expired"


async def test_missing_refresh_token_is_a_named_failure(g: G) -> None:
    g.fake.without_refresh_token = True
    state = await _start(g)
    done = await g.client.get(
        "/integrations/google/callback", params={"state": state, "code": CODE},
        allow_redirects=False,
    )
    assert done.headers["Location"] == "/?google_error=refresh_token_missing"
    assert (await g.status())["has_refresh_token"] is False


async def test_not_configured_answers_clearly(aiohttp_client, settings, fake_google) -> None:
    _fake, base = fake_google
    app = create_app(_google_settings(settings, base, oauth=False))
    client = await aiohttp_client(app)
    await Made(app).user("alice")
    await login(client)
    started = await client.get("/integrations/google/connect", allow_redirects=False)
    assert started.status == 302
    assert started.headers["Location"] == "/?google_error=oauth_not_configured"
    status = await (await client.get("/api/integrations/google/status")).json()
    assert status["ok"] is True and status["oauth_configured"] is False
    assert status["configured"] is False and status["connected"] is False


async def test_urls_carry_the_path_prefix(  # type: ignore[no-untyped-def]
    settings, fake_google
) -> None:
    _fake, base = fake_google
    prefixed = replace(
        _google_settings(settings, base), public_url="https://tt.example.com/gateway"
    )
    google = create_app(prefixed)[KEY]
    assert google.redirect_uri == "https://tt.example.com/gateway/integrations/google/callback"
    url = URL(google.consent_url("s" * 43, "c" * 43))
    assert url.query["redirect_uri"] == google.redirect_uri


@pytest.mark.skipif(ON_POSTGRES, reason="CLI start-up is covered on SQLite")
def test_run_job_from_the_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_", "GOOGLE_"))
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run-job", JOB],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"{JOB}: success (0 ok, 0 failed)" in result.stdout


async def test_connect_needs_a_session(g: G) -> None:
    await g.client.post("/logout", data={"csrf_token": g.csrf}, allow_redirects=False)
    response = await g.client.get("/integrations/google/connect", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/login"


# -- config and status ------------------------------------------------------------------------


async def test_a_save_cannot_set_gateway_keys(connected: G) -> None:
    g = connected
    answer = await g.save(
        email="mallory@example.com",
        refresh_token="forged",
        access_token="forged",
        token_expiry="2099-01-01T00:00:00+00:00",
        reconnect_required=True,
        connected_at="2000-01-01T00:00:00+00:00",
        sync_days_back=99,
        sync_direction="BOTH",
        calendar_id="  team@group.calendar.google.com ",
    )
    assert answer["ok"] is True and answer["is_active"] is True
    row = await g.row()
    config = g.app[KEY].store.config(row)
    assert config.get("email") == "alice@example.com"
    assert config.secret("refresh_token") == REFRESH and config.secret("access_token") == ACCESS
    assert config.get("token_expiry") == core.format_token_expiry(NOW + timedelta(seconds=3599))
    assert "reconnect_required" not in row.config
    assert datetime.fromisoformat(row.config["connected_at"]) == NOW
    assert config.get("sync_days_back") == 30
    assert config.get("sync_direction") == "both"
    assert config.get("calendar_id") == "team@group.calendar.google.com"


async def test_bad_values_are_refused(connected: G) -> None:
    for body, field in (
        ({"sync_direction": "sideways"}, "sync_direction"),
        ({"sync_days_back": "many"}, "sync_days_back"),
        ({"default_project_id": 999999}, "default_project_id"),
    ):
        response = await connected.client.post(
            "/api/integrations/google/config", json=body, headers=connected.headers
        )
        assert response.status == 400
        assert (await response.json())["field"] == field


async def test_check_connection_reports_the_account(connected: G) -> None:
    response = await connected.client.post(
        "/api/integrations/google/test", headers=connected.headers
    )
    body = await response.json()
    assert body["ok"] is True and body["connected_as"] == "alice@example.com"
    assert (await connected.status())["connected_as"] == "alice@example.com"


async def test_sync_needs_an_integration_and_the_scope(g: G) -> None:
    response = await g.client.post("/api/integrations/google/sync", headers=g.headers)
    assert response.status == 409
    assert await response.json() == {"ok": False, "error": "Integration not configured"}
    token = await g.made.token(g.user, "read:integrations")
    response = await g.client.post(
        "/api/integrations/google/sync", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 403


# -- tokens -----------------------------------------------------------------------------------


async def test_refresh_within_five_minutes_keeps_the_refresh_token(connected: G) -> None:
    g = connected
    g.clock.now = NOW + timedelta(minutes=50)  # 10 minutes left: no refresh
    await g.sync()
    assert g.fake.refreshes == 0
    g.clock.now = NOW + timedelta(minutes=56)  # under 5 minutes left
    await g.sync()
    assert g.fake.refreshes == 1
    row = await g.row()
    config = g.app[KEY].store.config(row)
    assert config.secret("access_token") == REFRESHED
    assert config.secret("refresh_token") == REFRESH  # the answer had none: the old one stays
    assert datetime.fromisoformat(row.config["token_expiry"]) == g.clock.now + timedelta(
        seconds=3599
    )
    [refresh] = [d for d in g.fake.of("/token") if d["grant_type"] == "refresh_token"]
    assert refresh["refresh_token"] == REFRESH and refresh["client_secret"] == "GOCSPX-test-secret"


async def test_concurrent_refreshes_refresh_once(connected: G) -> None:
    g = connected
    g.fake.refresh_delay = 0.05
    g.clock.now = NOW + timedelta(hours=2)
    service = g.app[KEY]
    row = await g.row()
    tokens = await asyncio.gather(*(service.access_token(row.id) for _ in range(5)))
    assert set(tokens) == {REFRESHED}
    assert g.fake.refreshes == 1


async def test_a_401_refreshes_once_and_retries_once(connected: G) -> None:
    g = connected
    g.fake.unauthorized_once = True
    body = await g.sync()
    assert body["ok"] is True and body["imported"] == 4
    assert g.fake.refreshes == 1


async def test_invalid_grant_requires_a_reconnect(connected: G) -> None:
    g = connected
    g.fake.invalid_grant = True
    g.clock.now = NOW + timedelta(hours=2)
    body = await g.sync(expect=409)
    assert body["ok"] is False and body["reconnect_required"] is True
    assert "reconnect" in body["error"].lower()
    status = await g.status()
    assert status["reconnect_required"] is True and status["connected"] is False
    assert status["last_sync_status"] == "error"
    assert g.fake.refreshes == 1
    # Neither a manual sync nor the job asks Google again.
    await g.sync(expect=409)
    report = await g.app[keys.SCHEDULER].run(JOB)
    assert report.detail["integrations"] == 0
    assert g.fake.refreshes == 1
    # Reconnecting clears it.
    g.fake.invalid_grant = False
    await g.connect()
    status = await g.status()
    assert status["reconnect_required"] is False and status["connected"] is True


# -- import -----------------------------------------------------------------------------------


async def test_import_follows_pages_and_time_zones(connected: G) -> None:
    g = connected
    body = await g.sync()
    assert body == {
        "ok": True, "imported": 4, "updated": 0, "deleted": 0, "exported": 0, "skipped": 3,
        "errors": [],
    }
    lists = g.fake.of("/calendar/v3/calendars/primary/events")
    assert [q.get("pageToken") for q in lists] == [None, PAGE2_TOKEN]
    assert all(q["singleEvents"] == "true" for q in lists)
    assert lists[0]["timeMin"] == "2026-11-20T10:00:00Z"
    entries = g.by_event(await g.entries())
    assert set(entries) == {"evt001abc", "evt004abc", "evt005abc", "evt006abc"}
    call = entries["evt001abc"]
    assert call.notes == "Client call [gcal:evt001abc]"
    assert (call.start_time, call.end_time) == (
        datetime(2026, 11, 24, 10, 0), datetime(2026, 11, 24, 11, 30)
    )
    assert call.duration_seconds == 5400
    assert call.source == "auto" and call.billable is False
    assert call.project_id == g.project.id and call.user_id == g.user.id
    new_york = entries["evt006abc"]  # 09:00 in New York is 15:00 in Rome
    assert (new_york.start_time, new_york.end_time) == (
        datetime(2026, 11, 26, 15, 0), datetime(2026, 11, 26, 16, 0)
    )
    late = entries["evt005abc"]
    assert late.end_time == datetime(2026, 11, 27, 1, 0) and late.duration_seconds == 7200
    status = await g.status()
    assert status["last_sync_status"] == "success"


async def test_sync_twice_and_at_once_creates_nothing_twice(connected: G) -> None:
    g = connected
    first, second = await asyncio.gather(g.sync(), g.sync())
    assert first["imported"] + second["imported"] == 4
    again = await g.sync()
    assert again["imported"] == 0 and again["updated"] == 0
    assert len(await g.entries()) == 4
    async with g.db.sessions() as s:
        links = (await s.execute(select(func.count()).select_from(CalendarLink))).scalar()
    assert links == 4


async def _links(g: G) -> int:
    async with g.db.sessions() as s:
        return (await s.execute(select(func.count()).select_from(CalendarLink))).scalar()


async def test_many_syncs_at_once_link_each_event_once(connected: G) -> None:
    """Six syncs of one integration at once (the job's work, the manual sync's): every event is
    imported by exactly one of them, whatever order their page transactions commit in."""
    g = connected
    connector = g.app[KEY]
    row = (await connector.store.active_rows())[0]
    outcomes = await asyncio.gather(*(connector.sync_work(row) for _ in range(6)))
    assert sum(o.detail["counts"]["imported"] for o in outcomes) == 4
    assert all(o.status == "success" for o in outcomes), [o.error for o in outcomes]
    assert len(await g.entries()) == 4 and await _links(g) == 4


@pytest.mark.skipif(not ON_POSTGRES, reason="needs a second writer while the first one is open")
async def test_an_event_linked_meanwhile_by_another_sync_is_not_imported_twice(
    connected: G, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another sync links the page's events between this sync's read and its write: the unique
    key refuses the second link, the page is rolled back and planned again from what is there."""
    from gateway.connectors.google import service

    g = connected
    connector = g.app[KEY]
    row = (await connector.store.active_rows())[0]
    real = service._marked_entries
    raced = False

    async def race_then_look(conn, user_id, event_ids):  # type: ignore[no-untyped-def]
        nonlocal raced
        if not raced:
            raced = True
            monkeypatch.setattr(service, "_marked_entries", real)
            other = await connector.sync_work(row)  # on its own connections; commits first
            assert other.detail["counts"]["imported"] == 4
        return await real(conn, user_id, event_ids)

    monkeypatch.setattr(service, "_marked_entries", race_then_look)
    outcome = await connector.sync_work(row)
    assert raced
    counts = outcome.detail["counts"]
    assert (counts["imported"], counts["errors"]) == (0, [])
    assert len(await g.entries()) == 4 and await _links(g) == 4


async def test_a_failed_page_write_is_retried_event_by_event(
    connected: G, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event whose write fails does not sink the rest of its page."""
    g = connected
    connector = g.app[KEY]
    real = connector._write_batch

    async def failing(row, project_id, batch, now_wall):  # type: ignore[no-untyped-def]
        if any(c.event.id == "evt004abc" for c in batch):
            raise RuntimeError("this event cannot be written")
        return await real(row, project_id, batch, now_wall)

    monkeypatch.setattr(connector, "_write_batch", failing)
    body = await g.sync()
    assert body["imported"] == 3
    assert body["errors"] == ["event evt004abc: RuntimeError"]
    assert set(g.by_event(await g.entries())) == {"evt001abc", "evt005abc", "evt006abc"}
    assert (await g.status())["last_sync_status"] == "partial"
    monkeypatch.undo()
    again = await g.sync()
    assert (again["imported"], again["errors"]) == (1, [])
    assert len(await g.entries()) == 4 and await _links(g) == 4


async def test_old_entries_with_a_marker_are_adopted(connected: G) -> None:
    g = connected
    async with g.db.sessions() as s:
        s.add(
            TimeEntry(
                user_id=g.user.id, project_id=g.project.id, start_time=datetime(2026, 11, 24, 10),
                end_time=datetime(2026, 11, 24, 11, 30), duration_seconds=5400,
                notes="Client call [gcal:evt001abc]", source="manual", billable=True, paid=False,
                created_at=datetime(2026, 11, 24), updated_at=datetime(2026, 11, 24),
            )
        )
        await s.commit()
    body = await g.sync()
    assert body["imported"] == 3
    entries = await g.entries()
    assert len(entries) == 4
    assert entries[0].source == "manual"  # the adopted one, untouched


async def test_moved_and_cancelled_events_are_followed(connected: G) -> None:
    g = connected
    await g.sync()
    before = g.by_event(await g.entries())
    # evt001 moves an hour later; evt004 is cancelled; evt005 is cancelled but was edited in
    # TimeTracker, so the user's entry stays.
    moved = g.fake.move("evt001abc", "2026-11-24T11:00:00+01:00", "2026-11-24T12:00:00+01:00")
    moved["updated"] = "2026-11-26T09:00:00.000Z"
    for event_id in ("evt004abc", "evt005abc"):
        g.fake.cancel(event_id)
    async with g.db.sessions() as s:
        await s.execute(
            update(TimeEntry)
            .where(TimeEntry.id == before["evt005abc"].id)
            .values(notes="Workshop, billed [gcal:evt005abc]", updated_at=datetime(2026, 11, 27, 9))
        )
        await s.commit()
    body = await g.sync()
    assert (body["updated"], body["deleted"], body["imported"]) == (1, 1, 0)
    after = g.by_event(await g.entries())
    assert set(after) == {"evt001abc", "evt005abc", "evt006abc"}
    assert (after["evt001abc"].start_time, after["evt001abc"].end_time) == (
        datetime(2026, 11, 24, 11), datetime(2026, 11, 24, 12)
    )
    assert after["evt001abc"].duration_seconds == 3600
    assert after["evt005abc"].notes.startswith("Workshop, billed")
    # An entry edited in TimeTracker is not moved back by a later change of its event.
    async with g.db.sessions() as s:
        await s.execute(
            update(TimeEntry)
            .where(TimeEntry.id == after["evt001abc"].id)
            .values(notes="Call, edited [gcal:evt001abc]", updated_at=datetime(2026, 11, 27, 9))
        )
        await s.commit()
    moved["start"]["dateTime"] = "2026-11-24T15:00:00+01:00"
    moved["end"]["dateTime"] = "2026-11-24T16:00:00+01:00"
    assert (await g.sync())["updated"] == 0
    [kept] = [e for e in await g.entries() if e.id == after["evt001abc"].id]
    assert kept.start_time == datetime(2026, 11, 24, 11)


@pytest.mark.postgres
async def test_an_edit_between_the_pages_read_and_its_write_is_kept(
    connected: G, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user edits entries in TimeTracker while a sync has read them but not yet written:
    neither the moved event's entry nor the cancelled one's is overwritten or removed."""
    from gateway.connectors.google import service

    g = connected
    await g.sync()
    before = g.by_event(await g.entries())
    g.fake.move("evt001abc", "2026-11-24T11:00:00+01:00", "2026-11-24T12:00:00+01:00")
    g.fake.cancel("evt004abc")
    write = service._PG_WRITE
    edited: set[int] = set()

    async def edit(ids: list[int]) -> None:
        async with g.db.sessions() as s:
            await s.execute(
                update(TimeEntry)
                .where(TimeEntry.id.in_(ids))
                .values(
                    notes="edited by hand " + TimeEntry.notes,
                    updated_at=datetime(2026, 11, 27, 9),
                )
            )
            await s.commit()
        edited.update(ids)

    # The edit commits after the page was read and planned, just before its write: the
    # entries that write is about to move ($4) or remove ($2).
    real_connection = g.db.driver_connection

    @contextlib.asynccontextmanager
    async def driver_connection():  # type: ignore[no-untyped-def]
        async with real_connection() as raw:
            execute = raw.execute

            async def edited_then_execute(query, *params):  # type: ignore[no-untyped-def]
                if query is write and (list(params[3]) + list(params[1])):
                    await edit(list(params[3]) + list(params[1]))
                return await execute(query, *params)

            class Wrapped:
                def __getattr__(self, name):  # type: ignore[no-untyped-def]
                    return getattr(raw, name)

                execute = staticmethod(edited_then_execute)

            yield Wrapped()

    monkeypatch.setattr(g.db, "driver_connection", driver_connection)
    await g.sync()
    assert edited == {before["evt001abc"].id, before["evt004abc"].id}  # both raced
    after = g.by_event(await g.entries())
    assert after["evt001abc"].notes.startswith("edited by hand")
    assert after["evt001abc"].start_time == before["evt001abc"].start_time  # not moved
    assert after["evt004abc"].notes.startswith("edited by hand")  # not removed


async def test_rate_limits_back_off_with_jitter_then_succeed(connected: G) -> None:
    g = connected
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    g.app[keys.HTTP].sleep = sleep
    g.fake.rate_limited = [429, 403]  # then the pages as usual
    body = await g.sync()
    assert body["ok"] is True and body["imported"] >= 1
    # Exponential (1 s, then 2 s) plus up to 1 s of jitter; the 403 was read from its body.
    assert len(waits) == 2 and 1 <= waits[0] < 2 and 2 <= waits[1] < 3
    assert waits[0] != 1.0 or waits[1] != 2.0  # jitter, not a fixed schedule
    g.fake.rate_limited = [429, 429, 429]  # more than the tries: the next sync goes on
    waits.clear()
    body = await g.sync(expect=502)
    assert body["ok"] is False and len(waits) == 2


async def test_a_fetch_error_is_recorded(connected: G) -> None:
    g = connected
    g.fake.list_status = 404
    body = await g.sync(expect=502)
    assert body["ok"] is False and "calendar" in body["error"].lower()
    status = await g.status()
    assert status["last_sync_status"] == "error" and status["last_error"]


async def test_the_job_runs_for_every_connected_user(connected: G) -> None:
    report = await connected.app[keys.SCHEDULER].run(JOB)
    assert report.outcome == "success" and report.succeeded == 1
    assert len(await connected.entries()) == 4
    assert JOB in connected.app[keys.SCHEDULER].jobs
    assert connected.app[keys.SCHEDULER].jobs[JOB].spec == "*/30 * * * *"


# -- export -----------------------------------------------------------------------------------


async def _entry(g: G, start: datetime, end: datetime | None, notes: str) -> TimeEntry:
    async with g.db.sessions() as s:
        entry = TimeEntry(
            user_id=g.user.id, project_id=g.project.id, start_time=start, end_time=end,
            duration_seconds=int((end - start).total_seconds()) if end else None, notes=notes,
            source="manual", billable=True, paid=False, created_at=start, updated_at=end or start,
        )
        s.add(entry)
        await s.commit()
        return entry


async def test_export_sends_new_entries_once_with_deterministic_ids(connected: G) -> None:
    g = connected
    await g.save(sync_direction="export")
    # Wall times in Rome (UTC+1): NOW is 11:00 there.
    older = await _entry(g, datetime(2026, 11, 27, 9), datetime(2026, 11, 27, 10), "Before")
    done = await _entry(g, datetime(2026, 11, 27, 11), datetime(2026, 11, 27, 11, 50), "Homepage")
    await _entry(g, datetime(2026, 11, 27, 11), datetime(2026, 11, 27, 11, 40),
                 "Client call [gcal:evt001abc]")
    await _entry(g, datetime(2026, 11, 27, 11, 55), None, "Running")
    g.clock.now = NOW + timedelta(hours=1)
    body = await g.sync()
    assert body["exported"] == 1 and body["imported"] == 0
    row = await g.row()
    event_id = core.export_event_id(row.id, done.id)
    assert list(g.fake.inserted) == [event_id]
    sent = g.fake.inserted[event_id]
    assert sent["summary"] == "[TT] Website — Homepage"
    assert sent["start"] == {"dateTime": "2026-11-27T10:00:00Z", "timeZone": "UTC"}
    assert sent["end"] == {"dateTime": "2026-11-27T10:50:00Z", "timeZone": "UTC"}
    assert older.id not in {int(b["extendedProperties"]["private"]["tt_entry_id"])
                            for b in g.fake.inserted.values()}
    # Sent once: the next sync does not post it again.
    g.clock.now = NOW + timedelta(hours=1, minutes=5)
    assert (await g.sync())["exported"] == 0
    assert len(g.fake.of("/calendar/v3/calendars/primary/events")) == 1
    # Had the link been lost, Google's 409 for the same id says "already there".
    async with g.db.sessions() as s:
        await s.execute(delete(CalendarLink))
        await s.commit()
    g.clock.now = NOW + timedelta(hours=1, minutes=10)
    body = await g.sync()
    assert body["exported"] == 0 and body["skipped"] >= 1 and body["errors"] == []
    assert len(g.fake.inserted) == 1


async def test_an_exported_entry_edited_later_updates_its_event(connected: G) -> None:
    g = connected
    await g.save(sync_direction="export")
    entry = await _entry(g, datetime(2026, 11, 27, 11), datetime(2026, 11, 27, 11, 50), "Draft")
    gone = await _entry(g, datetime(2026, 11, 27, 11, 5), datetime(2026, 11, 27, 11, 30), "Gone")
    g.clock.now = NOW + timedelta(hours=1)
    assert (await g.sync())["exported"] == 2
    row = await g.row()
    event_id = core.export_event_id(row.id, entry.id)
    del g.fake.inserted[core.export_event_id(row.id, gone.id)]  # the user deleted it in Google
    async with g.db.sessions() as s:  # edited in TimeTracker afterwards
        for changed in (entry, gone):
            stored = await s.get(TimeEntry, changed.id)
            stored.notes = f"{changed.notes} (edited)"
            stored.end_time = datetime(2026, 11, 27, 11, 55) if changed is entry else stored.end_time
            stored.updated_at = datetime(2026, 11, 27, 12, 30)
        await s.commit()
    g.clock.now = NOW + timedelta(hours=2)
    body = await g.sync()
    assert body["updated"] == 1 and body["exported"] == 0 and body["errors"] == []
    sent = g.fake.inserted[event_id]
    assert sent["summary"] == "[TT] Website — Draft (edited)"
    assert sent["end"] == {"dateTime": "2026-11-27T10:55:00Z", "timeZone": "UTC"}
    assert len(g.fake.inserted) == 1  # the deleted event is not brought back
    puts = [c for c in g.fake.calls if c[1] == "PATCH"]
    g.clock.now = NOW + timedelta(hours=3)
    assert (await g.sync())["updated"] == 0  # nothing edited since: no more PUTs
    assert [c for c in g.fake.calls if c[1] == "PATCH"] == puts


async def test_the_card_picks_from_the_users_calendars(connected: G) -> None:
    g = connected
    answer = await g.client.get("/api/integrations/google/calendars", headers=g.headers)
    assert answer.status == 200
    body = await answer.json()
    assert body["calendars"] == [
        {"id": "alice@example.com", "summary": "Alice", "primary": True},
        {"id": "team@group.calendar.google.com", "summary": "Team", "primary": False},
    ]


async def test_an_entry_typed_in_later_for_the_past_is_exported(connected: G) -> None:
    g = connected
    await g.save(sync_direction="export")
    g.clock.now = NOW + timedelta(hours=3)
    assert (await g.sync())["exported"] == 0  # the watermark moves past 13:00 Rome time
    # Typed in afterwards: it ended at 11:45, before the last export, after the connection.
    late = await _entry(g, datetime(2026, 11, 27, 11, 15), datetime(2026, 11, 27, 11, 45), "Late")
    async with g.db.sessions() as s:
        stored = await s.get(TimeEntry, late.id)
        stored.updated_at = datetime(2026, 11, 27, 14, 10)  # written now, in Rome wall time
        await s.commit()
    g.clock.now = NOW + timedelta(hours=3, minutes=30)
    assert (await g.sync())["exported"] == 1
    row = await g.row()
    assert core.export_event_id(row.id, late.id) in g.fake.inserted


async def test_exported_events_are_not_imported_back(connected: G) -> None:
    g = connected
    await g.save(sync_direction="both")
    done = await _entry(g, datetime(2026, 11, 27, 11), datetime(2026, 11, 27, 11, 50), "Homepage")
    g.clock.now = NOW + timedelta(hours=1)
    assert (await g.sync())["exported"] == 1
    exported = copy.deepcopy(next(iter(g.fake.inserted.values())))
    exported.update(status="confirmed", summary="Renamed by the user")  # no [TT] any more
    g.fake.page2["items"].append(exported)
    body = await g.sync()
    assert body["imported"] == 0
    assert [e.id for e in await g.entries() if "Homepage" in (e.notes or "")] == [done.id]


# -- disconnect -------------------------------------------------------------------------------


async def test_disconnect_revokes_and_wipes(connected: G) -> None:
    g = connected
    await g.save(calendar_id="work@example.com")
    response = await g.client.post(
        "/integrations/google/disconnect", data={"csrf_token": g.csrf}, allow_redirects=False
    )
    assert response.status == 302 and response.headers["Location"] == "/?google=disconnected"
    [revoked] = g.fake.of("/revoke")
    assert revoked == {"token": REFRESH}  # in the form body, never in the URL
    row = await g.row()
    assert row.is_active is False
    assert "access_token" not in row.config and "refresh_token" not in row.config
    assert "enc:v1:" not in json.dumps(row.config)
    status = await g.status()
    assert status["has_access_token"] is False and status["has_refresh_token"] is False
    assert status["calendar_id"] == "work@example.com"
    assert status["default_project_id"] == g.project.id
    assert status["email"] is None and status["connected"] is False
    # The common API route: also fine when already disconnected, and nothing to revoke.
    again = await g.client.post("/api/integrations/google/disconnect", headers=g.headers)
    assert again.status == 200 and await again.json() == {"ok": True}
    assert len(g.fake.of("/revoke")) == 1


async def test_disconnect_form_needs_csrf(connected: G) -> None:
    response = await connected.client.post(
        "/integrations/google/disconnect", data={"csrf_token": "wrong"}, allow_redirects=False
    )
    assert response.status == 403
    assert (await connected.row()).is_active is True


async def test_the_card_is_on_the_page(connected: G) -> None:
    page = await (await connected.client.get("/", params={"google": "connected"})).text()
    assert 'id="google-config-form"' in page
    assert 'href="/integrations/google/connect"' in page
    # Disconnect is the card frame's (the JSON route, with the page's CSRF token).
    assert 'data-api-action="/api/integrations/google/disconnect"' in page
    assert f'data-csrf="{connected.csrf}"' in page
    assert "Google Calendar is connected." in page
