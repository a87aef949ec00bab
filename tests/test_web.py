"""Web plumbing: error mapping, security headers, path prefix, health, readiness, metrics."""

from __future__ import annotations

import re
from dataclasses import replace

from aiohttp import web

from gateway import keys
from gateway.app import create_app
from tests.conftest import CSRF_RE, login


async def test_healthz_and_readyz(client) -> None:
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["ok"] is True
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json()) == {"ok": True, "database": "ok"}


async def test_readyz_fails_when_the_database_is_unreachable(aiohttp_client, settings) -> None:
    app = create_app(replace(settings, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    app.cleanup_ctx.clear()  # no start-up inspection: the database is down on purpose

    async def http_only(app: web.Application):  # type: ignore[no-untyped-def]
        yield

    app.cleanup_ctx.append(http_only)
    client = await aiohttp_client(app)
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json()) == {"ok": False, "error": "database unreachable"}


async def test_security_headers(client) -> None:
    response = await client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in csp
    assert "script-src 'self'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


async def test_frame_ancestors_from_settings(aiohttp_client, settings) -> None:
    app = create_app(replace(settings, frame_ancestors="'self' https://tt.example.com"))
    client = await aiohttp_client(app)
    response = await client.get("/api/session")
    assert (
        "frame-ancestors 'self' https://tt.example.com"
        in response.headers["Content-Security-Policy"]
    )


async def test_unknown_api_route_is_json_404_and_page_is_html(client) -> None:
    api = await client.get("/api/nope")
    assert api.status == 404
    assert (await api.json())["ok"] is False
    page = await client.get("/nope")
    assert page.status == 404
    assert page.content_type == "text/html"


async def test_wrong_method_is_405_json(client) -> None:
    response = await client.get("/api/timer/start")
    assert response.status == 405
    assert (await response.json())["ok"] is False


async def test_unexpected_errors_are_500_without_a_trace(aiohttp_client, settings) -> None:
    app = create_app(settings)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals ghp_abcdefghijklmnopqrstuvwxyz")

    app.router.add_get("/api/boom", boom)
    client = await aiohttp_client(app)
    response = await client.get("/api/boom")
    assert response.status == 500
    text = await response.text()
    assert "Traceback" not in text and "internals" not in text
    assert (await response.json()) == {"ok": False, "error": "Internal server error"}


async def test_path_prefix_in_links_forms_and_cookie(aiohttp_client, settings, made) -> None:
    app = create_app(replace(settings, public_url="https://tt.example.com/gateway"))
    client = await aiohttp_client(app)
    await made.user()
    page = await client.get("/login")
    html = await page.text()
    assert 'action="/gateway/login"' in html
    for url in re.findall(r'(?:href|src)="([^"]+)"', html):
        assert url.startswith(("/gateway/", "#", "https://")), url
    redirect = await client.get("/", allow_redirects=False)
    assert redirect.headers["Location"] == "/gateway/login"
    assert "Path=/gateway" in page.headers.get("Set-Cookie", "")
    assert "Secure" in page.headers.get("Set-Cookie", "")


async def test_static_css_is_served_and_committed(client) -> None:
    page = await client.get("/login")
    css = re.search(r'href="(/static/css/app\.css[^"]*)"', await page.text())
    assert css, "the page links the built stylesheet"
    response = await client.get(css.group(1))
    assert response.status == 200
    body = await response.text()
    assert len(body) > 1000 and "tailwindcss" in body


async def test_metrics_count_requests_by_route_template(client, made) -> None:
    await made.user()
    await login(client)
    await client.get("/api/timer/status")
    await client.get("/api/nope")
    text = await (await client.get("/metrics")).text()
    assert (
        'gateway_http_requests_total{method="GET",route="/api/timer/status",status="200"} 1.0'
        in text
    )
    assert 'route="unmatched"' in text
    assert "# TYPE gateway_webhook_deliveries_total counter" in text
    assert "# TYPE gateway_job_runs_total counter" in text


async def test_session_api_needs_auth(client, app) -> None:
    response = await client.get("/api/session")
    assert response.status == 401
    assert app[keys.SETTINGS].path_prefix == ""


async def test_hostile_inputs_get_4xx_never_500(client, made) -> None:
    """Non-ASCII tokens, broken multipart, deep nesting and NUL characters (review findings)."""
    await made.user()
    project = await made.project()
    csrf = await login(client)
    weird_csrf = await client.post("/api/timer/stop", headers={"X-CSRF-Token": "é"})
    assert weird_csrf.status == 403
    no_boundary = await client.post(
        "/api/timer/stop", data=b"x", headers={"Content-Type": "multipart/form-data"}
    )
    assert no_boundary.status == 400
    deep = await client.post(
        "/api/timer/start",
        data=b"[" * 200_000,
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
    )
    assert deep.status == 400
    nul = await client.post(
        "/api/timer/start",
        json={"project_id": project.id, "notes": "x\u0000y"},
        headers={"X-CSRF-Token": csrf},
    )
    assert nul.status == 400 and (await nul.json())["field"] == "notes"
    assert (await (await client.get("/api/timer/status")).json())["active"] is False
    bad_remember = await client.get("/api/session", cookies={"remember_token": "1|éé"})
    assert bad_remember.status == 200  # the gateway session still signs this client in


async def test_hostile_login_inputs(client, made) -> None:
    await made.user()
    page = await client.get("/login")
    csrf = CSRF_RE.search(await page.text()).group(1)
    response = await client.post(
        "/login", data={"username": "a", "password": "b", "csrf_token": "é"}
    )
    assert response.status == 403
    nul = await client.post(
        "/login", data={"username": "ali\x00ce", "password": "x", "csrf_token": csrf}
    )
    assert nul.status == 401
    broken = await client.post("/login", data=b"x", headers={"Content-Type": "multipart/form-data"})
    assert broken.status == 400
    anonymous = await client.get("/", cookies={"remember_token": "1|éé"}, allow_redirects=False)
    assert anonymous.status == 302
