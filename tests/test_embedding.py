"""Embedding: the cross-site session cookie, the Origin check, embed mode, themes, favicon."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.app import SESSION_COOKIE, create_app
from gateway.services import SERVICES
from gateway.web.embedding import cross_site_ancestors
from tests.conftest import CSRF_RE, PASSWORD, login
from tests.test_auth import flask_session_cookie


@pytest.mark.parametrize(
    ("ancestors", "public", "cross"),
    [
        ("'self'", "https://tt.example.com/gateway", False),
        ("'none'", "https://tt.example.com/gateway", False),
        ("'self' https://tt.example.com", "https://tt.example.com/gateway", False),
        ("https://app.example.com", "https://integrations.example.com", False),  # same site
        ("https://*.example.com", "https://gw.example.com", False),
        ("https://tt.example.org", "https://gw.example.com", True),
        ("'self' tt.other.net:8443", "https://gw.example.com", True),
        ("https:", "https://gw.example.com", True),
        ("*", "https://gw.example.com", True),
        ("http://127.0.0.1:5000", "http://localhost:8080", True),
    ],
)
def test_which_frame_ancestors_are_another_site(ancestors: str, public: str, cross: bool) -> None:
    assert cross_site_ancestors(ancestors, public) is cross


async def _login_response(client):  # type: ignore[no-untyped-def]
    page = await client.get("/login")
    token = CSRF_RE.search(await page.text()).group(1)
    return await client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
    )


def _set_cookie_headers(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [h for h in response.headers.getall("Set-Cookie", []) if h.startswith(SESSION_COOKIE)]


async def test_cross_site_embedding_makes_the_cookie_partitioned(
    aiohttp_client, settings, made
) -> None:
    app = create_app(
        replace(
            settings,
            public_url="https://gw.example.com",
            frame_ancestors="'self' https://tt.example.org",
        )
    )
    client = await aiohttp_client(app)
    await made.user()
    # The test client is plain HTTP and keeps no Secure cookie: carry it by hand.
    page = await client.get("/login")
    (first,) = _set_cookie_headers(page)
    jar = {"Cookie": first.split(";")[0]}
    token = CSRF_RE.search(await page.text()).group(1)
    response = await client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        headers=jar,
        allow_redirects=False,
    )
    assert response.status == 302, await response.text()
    (header,) = _set_cookie_headers(response)
    attributes = [part.strip().lower() for part in header.split(";")]
    assert "samesite=none" in attributes and "secure" in attributes
    assert "partitioned" in attributes and "httponly" in attributes

    # Sign-out deletes it with the same attributes (else the partitioned cookie would stay).
    jar = {"Cookie": header.split(";")[0]}
    session = await client.get("/api/session", headers=jar)
    csrf = (await session.json())["csrf_token"]
    out = await client.post(
        "/logout", data={"csrf_token": csrf}, headers=jar, allow_redirects=False
    )
    assert out.status == 302
    (deleted,) = _set_cookie_headers(out)
    assert "Max-Age=0" in deleted and "Partitioned" in deleted


async def test_same_site_embedding_keeps_lax(client, made) -> None:
    await made.user()
    (header,) = _set_cookie_headers(await _login_response(client))
    assert "SameSite=Lax" in header and "Partitioned" not in header


async def test_writes_from_another_origin_are_refused_even_with_the_token(client, made) -> None:
    await made.user()
    csrf = await login(client)
    project = await made.project()
    own = str(client.make_url("")).rstrip("/")
    for origin, expected in (
        ("https://evil.example", 403),
        ("null", 403),
        (own, 201),
    ):
        response = await client.post(
            "/api/timer/start",
            json={"project_id": project.id},
            headers={"X-CSRF-Token": csrf, "Origin": origin},
        )
        assert response.status == expected, (origin, await response.text())
        if expected == 403:
            assert "Cross-site" in (await response.json())["error"]
    # Without Origin, a browser still says where the request came from.
    refused = await client.post(
        "/api/timer/stop", headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    )
    assert refused.status == 403
    # The login form checks the origin too.
    page = await client.get("/login")
    token = CSRF_RE.search(await page.text()).group(1)
    forged = await client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert forged.status == 403


async def test_embed_mode_drops_the_header_and_keeps_the_view_across_sign_in(client, made) -> None:
    await made.user()
    # Not signed in: the redirect to the login form keeps ?embed=1&theme=dark.
    first = await client.get("/?embed=1&theme=dark", allow_redirects=False)
    assert first.status == 302
    assert first.headers["Location"] == "/login?embed=1&theme=dark"
    form = await client.get("/login?embed=1&theme=dark")
    html = await form.text()
    assert 'action="/login?embed=1&amp;theme=dark"' in html
    assert 'data-theme="dark"' in html and "data-embedded" in html
    assert "<header" not in html and "autofocus" not in html
    signed = await client.post(
        "/login?embed=1&theme=dark",
        data={"username": "alice", "password": PASSWORD, "csrf_token": CSRF_RE.search(html)[1]},
        allow_redirects=False,
    )
    assert signed.headers["Location"] == "/?embed=1&theme=dark"
    cards = await (await client.get("/?embed=1&theme=dark")).text()
    assert "<header" not in cards and "data-embedded" in cards and 'data-theme="dark"' in cards

    # The browser's Sec-Fetch-Dest says "iframe": embedded without the parameter.
    framed = await (await client.get("/", headers={"Sec-Fetch-Dest": "iframe"})).text()
    assert "data-embedded" in framed and "<header" not in framed
    # A top-level visit: the header, no forced theme; unknown themes are ignored.
    top = await (await client.get("/?theme=purple")).text()
    assert "<header" in top and "data-theme" not in top and "data-embedded" not in top


async def test_single_sign_on_has_no_sign_out_of_its_own(client, made) -> None:
    user = await made.user()
    cookie = flask_session_cookie({"_user_id": str(user.id)})
    html = await (await client.get("/", cookies={"session": cookie})).text()
    assert "data-sso-note" in html and "data-logout" not in html
    await login(client)  # a gateway session: Sign out is there
    assert "data-logout" in await (await client.get("/")).text()


async def test_cards_of_connectors_not_installed_say_coming_soon(client, app, made) -> None:
    await made.user()
    await login(client)
    html = await (await client.get("/")).text()
    for name in ("github", "google", "slack"):
        section = html.split(f'data-card="{name}"')[1].split("</section>")[0]
        opening = section.split(">")[0]
        if name in app[SERVICES].connectors:
            assert "data-installed" in opening, name
        else:  # app.js asks only installed cards for a status: no 404 in the console
            assert "data-installed" not in opening and "Coming soon" in section, name


async def test_favicon(client) -> None:
    page = await (await client.get("/login")).text()
    assert 'rel="icon" href="/static/favicon.svg' in page
    for path in ("/favicon.ico", "/static/favicon.svg"):
        response = await client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Type"].startswith("image/svg+xml")
        assert (await response.read()).startswith(b"<svg")
