"""PostgreSQL outages through a loopback TCP proxy: 503 while cut, bounded while frozen, recovery."""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gateway import keys
from gateway.app import create_app
from tests.conftest import ON_POSTGRES, Made
from tests.tcpproxy import TcpProxy
from tests.test_hostile import ROUTES

needs_postgres = pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL (TEST_DATABASE_URL)")

DB_TIMEOUT = 1.5  # GATEWAY_DB_TIMEOUT for these tests: short, so frozen waits stay short
# A frozen server may cost a connect timeout or a statement timeout (plus the client-side
# margin of one second), never more: the bound a request must answer within.
FROZEN_BOUND = 2 * DB_TIMEOUT + 1.5


@pytest.fixture
async def outage(settings, aiohttp_client):  # type: ignore[no-untyped-def]
    url = make_url(settings.database_url)
    host, port = url.host or "127.0.0.1", url.port or 5432
    if host not in {"127.0.0.1", "localhost", "::1"}:
        pytest.skip("the outage proxy only forwards to a loopback PostgreSQL")
    proxy = await TcpProxy(host, port).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    # The outbox dispatcher is off: its own statements through the proxy would flip the health
    # state between a test's requests and make the count of outage lines depend on timing.
    app = create_app(
        dataclasses.replace(settings, database_url=proxied, db_timeout=DB_TIMEOUT),
        dispatch_events=False,
    )
    client = await aiohttp_client(app)
    made = Made(app)
    user = await made.user()
    project = await made.project()
    token = await made.token(user)
    yield proxy, client, {"Authorization": f"Bearer {token}"}, project.id
    proxy.forward()
    await proxy.stop()


def _unavailable_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.CRITICAL]


@pytest.mark.postgres
@needs_postgres
async def test_cut_database_answers_503_logs_once_and_recovers(outage, caplog) -> None:
    proxy, client, auth, project_id = outage
    caplog.set_level(logging.INFO)
    assert (await client.get("/api/timer/status", headers=auth)).status == 200
    assert (await client.get("/readyz")).status == 200

    proxy.cut()
    for _ in range(3):
        response = await client.get("/api/timer/status", headers=auth)
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        body = await response.json()
        assert body["ok"] is False and "database" in body["error"].lower()
    start = await client.post("/api/timer/start", json={"project_id": project_id}, headers=auth)
    assert start.status == 503 and "Retry-After" in start.headers
    page = await client.get("/", headers={**auth, "Accept": "text/html"})
    assert page.status == 503 and "Retry-After" in page.headers
    text = await page.text()
    assert "Temporarily unavailable" in text and "Traceback" not in text
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["ok"] is False

    # Every route of the router: a 503 where it needs the database, never a 500.
    for route in ROUTES:
        response = await client.request(
            route.method, route.path, headers=auth, json={}, allow_redirects=False
        )
        assert response.status != 500, f"{route}: {await response.text()}"
        if response.status == 503:
            assert "Retry-After" in response.headers, str(route)

    # One line for the outage, however many requests met it; no traceback per request.
    assert len(_unavailable_logs(caplog)) == 1, _unavailable_logs(caplog)
    assert _tracebacks(caplog) == []

    proxy.forward()
    # No restart: the first request after the database is back succeeds.
    recovered = await client.get("/api/timer/status", headers=auth)
    assert recovered.status == 200, await recovered.text()
    assert (await recovered.json())["active"] is False  # the start during the outage wrote nothing
    assert (await client.get("/readyz")).status == 200
    assert [r for r in caplog.records if "database is back" in r.getMessage()]


@pytest.mark.postgres
@needs_postgres
async def test_quiet_restart_costs_no_request(outage, caplog) -> None:
    """After a restart every pooled connection is dead; the first request is retried once."""
    proxy, client, auth, project_id = outage
    caplog.set_level(logging.INFO)
    assert (await client.get("/api/timer/status", headers=auth)).status == 200
    proxy.cut()  # the server goes away and comes straight back: pooled connections are dead
    proxy.forward()
    started = await client.post("/api/timer/start", json={"project_id": project_id}, headers=auth)
    assert started.status == 201, await started.text()
    assert any("retrying POST /api/timer/start" in r.getMessage() for r in caplog.records)
    status = await (await client.get("/api/timer/status", headers=auth)).json()
    assert (
        status["active"] is True and status["entry"]["id"] == (await started.json())["entry"]["id"]
    )


@pytest.mark.postgres
@needs_postgres
async def test_frozen_database_fails_fast_and_recovers(outage, caplog) -> None:
    proxy, client, auth, project_id = outage
    caplog.set_level(logging.INFO)
    assert (await client.get("/api/timer/status", headers=auth)).status == 200

    proxy.freeze()
    latencies = []
    for path in ("/api/timer/status", "/api/timer/status", "/api/projects"):
        began = time.monotonic()
        response = await client.get(path, headers=auth)
        latencies.append(time.monotonic() - began)
        assert response.status == 503, await response.text()
        assert "Retry-After" in response.headers
    began = time.monotonic()
    ready = await client.get("/readyz")
    latencies.append(time.monotonic() - began)
    assert ready.status == 503
    assert max(latencies) < FROZEN_BOUND, latencies
    assert len(_unavailable_logs(caplog)) == 1
    assert _tracebacks(caplog) == []

    proxy.forward()
    recovered = await client.get("/api/timer/status", headers=auth)
    assert recovered.status == 200, await recovered.text()
    started = await client.post("/api/timer/start", json={"project_id": project_id}, headers=auth)
    assert started.status == 201


@pytest.mark.postgres
@needs_postgres
async def test_engine_carries_the_timeouts(outage) -> None:
    """The bounds come from GATEWAY_DB_TIMEOUT: connect, statement (client and server side)."""
    _proxy, client, _auth, _project = outage
    db = client.app[keys.DB]
    async with db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw._config.command_timeout == DB_TIMEOUT + 1
        shown = await raw.fetchval("SHOW statement_timeout")
    assert shown == f"{int(DB_TIMEOUT * 1000)}ms"


# -- the retry rule, on either database ----------------------------------------------------------


def _stale() -> DBAPIError:
    return DBAPIError("SELECT 1", None, ConnectionResetError("gone"), connection_invalidated=True)


@pytest.fixture
async def retry_app(app, aiohttp_client, made):  # type: ignore[no-untyped-def]
    """The real app with three extra routes whose first run meets a dead pooled connection."""
    runs: dict[str, int] = {"read": 0, "commit": 0, "stream": 0}

    async def read(request: web.Request) -> web.Response:
        runs["read"] += 1
        body = await request.read()
        if runs["read"] == 1:
            raise _stale()
        return web.json_response({"ok": True, "body": body.decode()})

    async def commit(request: web.Request) -> web.Response:
        runs["commit"] += 1
        async with request.app[keys.DB].sessions() as session:
            await session.commit()  # from here the outcome may be durable
        raise _stale()

    async def stream(request: web.Request) -> web.Response:
        runs["stream"] += 1
        async for _ in request.content.iter_chunked(1024):
            pass
        raise _stale()

    app.router.add_post("/api/test-only/read", read)
    app.router.add_post("/api/test-only/commit", commit)
    app.router.add_post("/api/test-only/stream", stream)
    return await aiohttp_client(app), runs


async def test_retry_once_when_the_request_left_no_trace(retry_app) -> None:
    client, runs = retry_app
    response = await client.post("/api/test-only/read", data=b"same body")
    assert response.status == 200 and (await response.json())["body"] == "same body"
    assert runs["read"] == 2


async def test_no_retry_after_a_commit_or_a_consumed_stream(retry_app, caplog) -> None:
    client, runs = retry_app
    for path in ("/api/test-only/commit", "/api/test-only/stream"):
        response = await client.post(path, data=b"x" * 10)
        assert response.status == 503, path
        assert response.headers["Retry-After"].isdigit()
        assert (await response.json())["ok"] is False
    assert runs["commit"] == 1 and runs["stream"] == 1
    # Each failing request is logged as an outage at most once (a line per change of state,
    # not per request). Between the two, the pool may open a fresh connection that briefly
    # marks the database as back, so two lines are possible; never more.
    assert 1 <= len(_unavailable_logs(caplog)) <= 2
