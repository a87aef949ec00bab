"""The browser side: login form, logout, the connector cards page, and who-am-I."""

from __future__ import annotations

import asyncio
import time

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session
from sqlalchemy import func, select

from gateway import assets, keys
from gateway.auth.identity import (
    CSRF_FIELD,
    SESSION_CSRF,
    SESSION_USER,
    check_origin,
    csrf_token,
    principal_of,
    protected,
    resolve,
)
from gateway.auth.passwords import check_password
from gateway.crypto import same_secret
from gateway.db.models import User
from gateway.errors import Forbidden
from gateway.services import SERVICES
from gateway.web.embedding import view_query
from gateway.web.jsonio import ok, read_form

routes = web.RouteTableDef()
STATIC_DIR = assets.directory("static")

# A hash to check against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = "pbkdf2:sha256:600000$timing$" + "0" * 64


async def _login_page(
    request: web.Request, *, error: str | None = None, username: str = "", status: int = 200
) -> web.Response:
    session = await get_session(request)
    context = {"csrf_token": csrf_token(session), "error": error, "username": username}
    return aiohttp_jinja2.render_template("login.html", request, context, status=status)


@routes.get("/login", name="login")
async def login_form(request: web.Request) -> web.StreamResponse:
    principal = await _resolve_quietly(request)
    if principal is not None:
        raise web.HTTPFound(request.app[keys.SETTINGS].path_prefix + "/" + view_query(request))
    return await _login_page(request)


@routes.post("/login")
async def login_submit(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    form = await read_form(request)
    session = await get_session(request)
    given = form.get(CSRF_FIELD)
    expected = session.get(SESSION_CSRF)
    if not (isinstance(given, str) and isinstance(expected, str) and same_secret(given, expected)):
        raise Forbidden("Missing or invalid CSRF token: reload the page and try again")
    username = str(form.get("username") or "").strip().lower()[:80]
    password = str(form.get("password") or "")
    if "\x00" in username or "\x00" in password:  # never a valid login; PostgreSQL refuses NUL
        return await _login_page(request, error="Invalid username or password", status=401)
    db = request.app[keys.DB]
    async with db.sessions() as s:
        user = (
            await s.execute(select(User).where(func.lower(User.username) == username))
        ).scalar_one_or_none()
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    # scrypt/pbkdf2 take tens of milliseconds: keep them off the event loop.
    valid = await asyncio.to_thread(check_password, stored, password)
    if user is None or not valid or not username or not password:
        return await _login_page(
            request, error="Invalid username or password", username=username, status=401
        )
    if not user.is_active:
        return await _login_page(
            request, error="This account is inactive", username=username, status=403
        )
    # A fresh session on login: no fixation of a session id or CSRF token set before it.
    session = await new_session(request)
    session[SESSION_USER] = user.id
    session["login_at"] = int(time.time())
    csrf_token(session)
    raise web.HTTPFound(request.app[keys.SETTINGS].path_prefix + "/" + view_query(request))


@routes.post("/logout", name="logout")
@protected(page=True)
async def logout(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPFound(request.app[keys.SETTINGS].path_prefix + "/login" + view_query(request))


@routes.get("/", name="index")
@protected(page=True)
async def index(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    session = await get_session(request)
    # The query carries outcomes of redirects back to this page (e.g. ?google_error=<reason>).
    context = {
        "csrf_token": csrf_token(session),
        "user": principal.public(),
        # Signed in through TimeTracker's cookie: signing out is TimeTracker's business.
        "single_sign_on": principal.via == "timetracker",
        # Cards of connectors not installed in this process say "Coming soon" and fetch nothing.
        "installed": frozenset(request.app[SERVICES].connectors),
        "query": request.query,
    }
    return aiohttp_jinja2.render_template("cards.html", request, context)


@routes.get("/favicon.ico", name="favicon")
async def favicon(request: web.Request) -> web.StreamResponse:
    # Pages link static/favicon.svg; this answers browsers and tools that ask for the old name.
    return web.FileResponse(STATIC_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml"})


@routes.get("/api/session", name="api_session")
@protected()
async def api_session(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    body: dict[str, object] = {"user": principal.public()}
    if principal.uses_cookies:
        body["csrf_token"] = csrf_token(await get_session(request))
    return ok(**body)


async def _resolve_quietly(request: web.Request):  # type: ignore[no-untyped-def]
    try:
        return await resolve(request)
    except Exception:  # an inactive or broken identity simply sees the form
        return None
