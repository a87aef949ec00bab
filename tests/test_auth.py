"""Sign-in and access: login form, TimeTracker single sign-on, API tokens, CSRF, roles."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask_login.utils import encode_cookie
from sqlalchemy import insert, text
from werkzeug.security import generate_password_hash

from gateway import keys
from gateway.auth.passwords import check_password, hash_password
from gateway.auth.timetracker import TimeTrackerCookies
from gateway.timeutil import utcnow_naive
from tests.conftest import CSRF_RE, PASSWORD, login

TT_SECRET = "tt-flask-secret"  # the settings fixture's TIMETRACKER_SECRET_KEY


def flask_session_cookie(data: dict, secret: str = TT_SECRET) -> str:
    """A cookie exactly as TimeTracker (Flask) writes it."""
    app = Flask("tt")
    app.secret_key = secret
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    return serializer.dumps(data)


def remember_cookie(user_id: int, secret: str = TT_SECRET) -> str:
    app = Flask("tt")
    app.secret_key = secret
    with app.app_context():
        return encode_cookie(str(user_id))


# -- password hashes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["scrypt", "pbkdf2:sha256", "pbkdf2:sha256:1000", "scrypt:16384:8:1"]
)
def test_werkzeug_hashes_verify(method: str) -> None:
    stored = generate_password_hash("s3cret!", method=method)
    assert check_password(stored, "s3cret!")
    assert not check_password(stored, "s3cret?")


def test_our_hashes_are_werkzeug_readable() -> None:
    from werkzeug.security import check_password_hash

    stored = hash_password("hunter2hunter2")
    assert stored.startswith("scrypt:32768:8:1$")
    assert check_password_hash(stored, "hunter2hunter2")


@pytest.mark.parametrize(
    "stored", [None, "", "plain", "md5$x$y", "scrypt:abc:8:1$salt$00", "scrypt:99999999:8:1$s$00"]
)
def test_malformed_hashes_never_verify(stored: str | None) -> None:
    assert not check_password(stored, "anything")


# -- login form ------------------------------------------------------------------------------


async def test_login_logout_round_trip(client, made) -> None:
    await made.user("alice", full_name="Alice Liddell")
    assert (await client.get("/api/session")).status == 401
    csrf = await login(client)
    body = await (await client.get("/api/session")).json()
    assert body["ok"] is True
    assert body["user"]["username"] == "alice"
    assert body["user"]["display_name"] == "Alice Liddell"
    assert body["user"]["is_admin"] is False
    assert body["csrf_token"] == csrf
    page = await client.get("/")
    assert page.status == 200
    assert "Personal connectors" in await page.text()
    out = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert out.status == 302
    assert (await client.get("/api/session")).status == 401


async def test_session_cookie_attributes(client, made) -> None:
    await made.user()
    page = await client.get("/login")
    match = CSRF_RE.search(await page.text())
    response = await client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": match.group(1)},
        allow_redirects=False,
    )
    cookie = response.cookies["tt_gateway_session"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # public URL is http in the fixture
    assert "session" not in response.cookies  # never TimeTracker's cookie name


async def test_wrong_password_shows_the_form_again(client, made) -> None:
    await made.user()
    page = await client.get("/login")
    csrf = CSRF_RE.search(await page.text()).group(1)
    response = await client.post(
        "/login", data={"username": "alice", "password": "nope", "csrf_token": csrf}
    )
    assert response.status == 401
    html = await response.text()
    assert "Invalid username or password" in html
    assert 'name="password"' in html
    unknown = await client.post(
        "/login", data={"username": "nobody", "password": "nope", "csrf_token": csrf}
    )
    assert unknown.status == 401


async def test_login_without_csrf_is_refused(client, made) -> None:
    await made.user()
    await client.get("/login")
    response = await client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status == 403
    assert (await client.get("/api/session")).status == 401


async def test_inactive_user_cannot_log_in(client, made) -> None:
    await made.user(active=False)
    page = await client.get("/login")
    csrf = CSRF_RE.search(await page.text()).group(1)
    response = await client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf}
    )
    assert response.status == 403
    assert (await client.get("/api/session")).status == 401


async def test_pages_redirect_and_api_answers_401(client) -> None:
    page = await client.get("/", allow_redirects=False)
    assert page.status == 302
    assert page.headers["Location"] == "/login"
    api = await client.get("/api/timer/status")
    assert api.status == 401
    assert (await api.json()) == {"ok": False, "error": "Authentication required"}


async def test_user_deactivated_after_login_is_refused(client, made, app) -> None:
    user = await made.user()
    await login(client)
    async with app[keys.DB].sessions() as s:
        await s.execute(text("UPDATE users SET is_active = false WHERE id = :id"), {"id": user.id})
        await s.commit()
    response = await client.get("/api/session")
    assert response.status == 403


# -- CSRF ------------------------------------------------------------------------------------


async def test_session_writes_need_the_csrf_header(client, made) -> None:
    await made.user()
    project = await made.project()
    csrf = await login(client)
    missing = await client.post("/api/timer/start", json={"project_id": project.id})
    assert missing.status == 403
    wrong = await client.post(
        "/api/timer/start", json={"project_id": project.id}, headers={"X-CSRF-Token": "x" * 43}
    )
    assert wrong.status == 403
    assert (await (await client.get("/api/timer/status")).json())["active"] is False
    right = await client.post(
        "/api/timer/start", json={"project_id": project.id}, headers={"X-CSRF-Token": csrf}
    )
    assert right.status == 201


# -- TimeTracker single sign-on ----------------------------------------------------------------


async def test_timetracker_session_cookie_signs_in(client, made) -> None:
    user = await made.user(password=None)
    cookie = flask_session_cookie({"_user_id": str(user.id), "_fresh": True, "csrf_token": "abc"})
    response = await client.get("/api/session", cookies={"session": cookie})
    assert response.status == 200
    body = await response.json()
    assert body["user"]["id"] == user.id
    # The CSRF token handed out then protects writes made with that cookie.
    project = await made.project()
    refused = await client.post(
        "/api/timer/start", json={"project_id": project.id}, cookies={"session": cookie}
    )
    assert refused.status == 403
    allowed = await client.post(
        "/api/timer/start",
        json={"project_id": project.id},
        cookies={"session": cookie},
        headers={"X-CSRF-Token": body["csrf_token"]},
    )
    assert allowed.status == 201


async def test_timetracker_cookie_with_tagged_values(client, made) -> None:
    user = await made.user(password=None)
    cookie = flask_session_cookie({"_user_id": str(user.id), "_flashes": [("info", "hi")]})
    assert (await client.get("/api/session", cookies={"session": cookie})).status == 200


@pytest.mark.parametrize("variant", ["forged", "tampered", "garbage", "no_user"])
async def test_bad_timetracker_cookies_are_ignored(client, made, variant) -> None:
    user = await made.user(password=None)
    good = flask_session_cookie({"_user_id": str(user.id)})
    cookie = {
        "forged": flask_session_cookie({"_user_id": str(user.id)}, secret="not-the-secret"),
        "tampered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "garbage": "not.a.cookie",
        "no_user": flask_session_cookie({"theme": "dark"}),
    }[variant]
    response = await client.get("/api/session", cookies={"session": cookie})
    assert response.status == 401


def test_expired_timetracker_cookie_is_refused() -> None:
    cookies = TimeTrackerCookies(TT_SECRET, max_age=-1)
    assert cookies.user_id_from_session(flask_session_cookie({"_user_id": "1"})) is None
    assert (
        TimeTrackerCookies(TT_SECRET).user_id_from_session(flask_session_cookie({"_user_id": "1"}))
        == 1
    )


async def test_remember_token_signs_in(client, made) -> None:
    user = await made.user(password=None)
    response = await client.get(
        "/api/session", cookies={"remember_token": remember_cookie(user.id)}
    )
    assert response.status == 200
    forged = await client.get(
        "/api/session", cookies={"remember_token": remember_cookie(user.id, "other")}
    )
    assert forged.status == 401


async def test_timetracker_cookie_ignored_without_secret(aiohttp_client, settings, made) -> None:
    from dataclasses import replace

    from gateway.app import create_app

    app = create_app(replace(settings, timetracker_secret_key=None))
    client = await aiohttp_client(app)
    user = await made.user(password=None)
    cookie = flask_session_cookie({"_user_id": str(user.id)})
    assert (await client.get("/api/session", cookies={"session": cookie})).status == 401


async def test_inactive_user_via_timetracker_cookie_gets_403(client, made) -> None:
    user = await made.user(password=None, active=False)
    cookie = flask_session_cookie({"_user_id": str(user.id)})
    assert (await client.get("/api/session", cookies={"session": cookie})).status == 403


# -- API tokens --------------------------------------------------------------------------------


async def test_bearer_token_reads_and_writes_without_csrf(client, made) -> None:
    user = await made.user()
    project = await made.project()
    token = await made.token(user, "read:time_entries,write:time_entries")
    headers = {"Authorization": f"Bearer {token}"}
    started = await client.post(
        "/api/timer/start", json={"project_id": project.id}, headers=headers
    )
    assert started.status == 201
    status = await (await client.get("/api/timer/status", headers=headers)).json()
    assert status["active"] is True
    session = await (await client.get("/api/session", headers=headers)).json()
    assert "csrf_token" not in session


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (None, 403),
        ("", 403),
        ("read:projects", 403),
        ("write:time_entries", 403),
        ("read:time_entries", 200),
        ("read:*", 200),
        ("*", 200),
        ("admin:all", 200),
    ],
)
async def test_token_scopes(client, made, scopes, expected) -> None:
    user = await made.user()
    token = await made.token(user, scopes)
    response = await client.get("/api/timer/status", headers={"Authorization": f"Bearer {token}"})
    assert response.status == expected


@pytest.mark.parametrize("problem", ["unknown", "inactive", "expired", "scheme", "empty"])
async def test_bad_tokens_get_401(client, made, problem) -> None:
    user = await made.user()
    if problem == "unknown":
        header = "Bearer tt_" + "0" * 32
    elif problem == "inactive":
        header = "Bearer " + await made.token(user, active=False)
    elif problem == "expired":
        header = "Bearer " + await made.token(
            user, expires_at=utcnow_naive() - timedelta(minutes=1)
        )
    elif problem == "scheme":
        header = "Basic " + await made.token(user)
    else:
        header = "Bearer "
    response = await client.get("/api/timer/status", headers={"Authorization": header})
    assert response.status == 401
    body = await response.json()
    assert body["ok"] is False and body["error"]


async def test_token_of_inactive_user_gets_403(client, made) -> None:
    user = await made.user(active=False)
    token = await made.token(user)
    response = await client.get("/api/timer/status", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 403


async def test_future_expiry_is_accepted(client, made) -> None:
    user = await made.user()
    token = await made.token(user, expires_at=datetime.utcnow() + timedelta(days=1))  # noqa: DTZ003
    response = await client.get("/api/timer/status", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    assert hashlib.sha256(token.encode()).hexdigest() != token


# -- admin -------------------------------------------------------------------------------------


async def test_admin_through_user_roles_table(app, made) -> None:
    """TimeTracker also grants admin through roles 'admin'/'super_admin' in user_roles."""
    from gateway.auth.identity import is_admin

    db = app[keys.DB]
    user = await made.user()
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE roles (id INTEGER PRIMARY KEY, name VARCHAR(50))"))
        await conn.execute(text("CREATE TABLE user_roles (user_id INTEGER, role_id INTEGER)"))
    try:
        await db.inspect_optional_tables()
        async with db.sessions() as s:
            assert not await is_admin(s, user, db.optional_tables)
            await s.execute(text("INSERT INTO roles (id, name) VALUES (7, 'super_admin')"))
            await s.execute(insert_user_role(user.id, 7))
            await s.commit()
            assert await is_admin(s, user, db.optional_tables)
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE user_roles"))
            await conn.execute(text("DROP TABLE roles"))


def insert_user_role(user_id: int, role_id: int):  # type: ignore[no-untyped-def]
    from gateway.db.models import user_roles

    return insert(user_roles).values(user_id=user_id, role_id=role_id)


@pytest.mark.parametrize(("scopes", "expected"), [(None, 403), ("", 403), ("read:projects", 200)])
async def test_token_without_scopes_has_no_access_even_to_session(
    client, made, scopes, expected
) -> None:
    user = await made.user()
    token = await made.token(user, scopes)
    response = await client.get("/api/session", headers={"Authorization": f"Bearer {token}"})
    assert response.status == expected
