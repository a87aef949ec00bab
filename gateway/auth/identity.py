"""Who is asking: gateway session, TimeTracker single sign-on, or a TimeTracker API token."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_session import Session, get_session
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import keys
from gateway.crypto import same_secret
from gateway.db.models import ApiToken, User, roles, user_roles
from gateway.errors import Forbidden, Unauthorized
from gateway.timeutil import utcnow_naive
from gateway.web.embedding import view_query
from gateway.web.jsonio import FORM_TYPES, read_form

SESSION_USER = "uid"
SESSION_CSRF = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
ADMIN_ROLE_NAMES = ("admin", "super_admin")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PRINCIPAL = "principal"  # request key
TOKEN_MAX_LENGTH = 200  # TimeTracker's are 35 characters; anything far longer is not one


@dataclass(frozen=True)
class Principal:
    user: User
    is_admin: bool
    via: str  # "session", "timetracker" or "token"
    scopes: frozenset[str] | None = None  # None: a browser session, which may do all

    @property
    def uses_cookies(self) -> bool:
        return self.via != "token"

    def allows(self, scope: str) -> bool:
        """TimeTracker's scope rules: none → nothing; `*`/`admin:all` → all; `read:*` per verb."""
        if self.scopes is None:
            return True
        if "*" in self.scopes or "admin:all" in self.scopes:
            return True
        verb = scope.split(":", 1)[0]
        return scope in self.scopes or f"{verb}:*" in self.scopes

    def public(self) -> dict[str, object]:
        return {
            "id": self.user.id,
            "username": self.user.username,
            "display_name": self.user.display_name,
            "is_admin": self.is_admin,
        }


def parse_scopes(raw: str | None) -> frozenset[str]:
    if not raw:
        return frozenset()
    return frozenset(s.strip() for s in raw.replace(" ", ",").split(",") if s.strip())


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def is_admin(db_session: AsyncSession, user: User, optional_tables: frozenset[str]) -> bool:
    if user.role in ADMIN_ROLE_NAMES:
        return True
    if not {"roles", "user_roles"} <= optional_tables:
        return False
    query = (
        select(func.count())
        .select_from(user_roles.join(roles, roles.c.id == user_roles.c.role_id))
        .where(user_roles.c.user_id == user.id, roles.c.name.in_(ADMIN_ROLE_NAMES))
    )
    return bool((await db_session.execute(query)).scalar())


def csrf_token(session: Session) -> str:
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str) or len(token) < 20:
        token = secrets.token_urlsafe(32)
        session[SESSION_CSRF] = token
    return token


async def resolve(request: web.Request) -> Principal | None:
    """The caller's principal, None when anonymous. Bad credentials raise; they never fall back."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]  # type: ignore[no-any-return]
    app = request.app
    db = app[keys.DB]
    auth = request.headers.get("Authorization")
    via: str
    scopes: frozenset[str] | None = None
    user_id: int | None
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Unsupported Authorization header: use 'Bearer <API token>'")
        token = token.strip()
        if not token.isascii() or not token.isprintable() or len(token) > TOKEN_MAX_LENGTH:
            raise Unauthorized("Invalid API token")  # not a token TimeTracker issues
        async with db.sessions() as s:
            row = (
                await s.execute(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
            ).scalar_one_or_none()
        if row is None or not row.is_active:
            raise Unauthorized("Invalid API token")
        if row.expires_at is not None and row.expires_at <= utcnow_naive():
            raise Unauthorized("API token expired")
        user_id, via, scopes = row.user_id, "token", parse_scopes(row.scopes)
    else:
        session = await get_session(request)
        user_id, via = _as_int(session.get(SESSION_USER)), "session"
        tt = app[keys.TT_COOKIES]
        if user_id is None and tt is not None:
            cookie_name = app[keys.SETTINGS].timetracker_session_cookie
            user_id = tt.user_id_from_session(request.cookies.get(cookie_name))
            if user_id is None:
                user_id = tt.user_id_from_remember(request.cookies.get("remember_token"))
            via = "timetracker"
        if user_id is None:
            return None
    async with db.sessions() as s:
        user = await s.get(User, user_id)
        if user is None:
            if via == "token":
                raise Unauthorized("Invalid API token")
            return None
        if not user.is_active:
            raise Forbidden("This account is inactive")
        admin = await is_admin(s, user, db.optional_tables)
    principal = Principal(user=user, is_admin=admin, via=via, scopes=scopes)
    request[PRINCIPAL] = principal
    return principal


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request: web.Request) -> None:
    """A cookie-authenticated write must come from one of our own pages.

    With a SameSite=None session cookie (embedded cross-site) the browser sends the cookie on
    requests other sites start, so the Origin header is checked before the token: our public
    origin, or the origin the request was addressed to (direct access, tests). Clients that send
    no Origin (old browsers, scripts) fall back to Sec-Fetch-Site and then to the token alone.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site", "same-origin") in {"same-origin", "none"}:
            return
        raise Forbidden("Cross-site request refused")
    allowed = {
        _origin_of(request.app[keys.SETTINGS].public_url),
        f"{request.scheme}://{request.host}".lower(),
    }
    if origin.strip().lower() not in allowed:
        raise Forbidden("Cross-site request refused")


async def check_csrf(request: web.Request) -> None:
    check_origin(request)
    session = await get_session(request)
    expected = session.get(SESSION_CSRF)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in FORM_TYPES:
        value = (await read_form(request)).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not given or not same_secret(expected, given):
        raise Forbidden("Missing or invalid CSRF token")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def protected(
    scope: str | None = None, *, admin: bool = False, page: bool = False
) -> Callable[[Handler], Handler]:
    """Require a principal (and scope/admin); check CSRF on cookie-authenticated writes.

    API routes answer 401 JSON; pages redirect to the login form.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            principal = await resolve(request)
            if principal is None:
                if page:
                    settings = request.app[keys.SETTINGS]
                    raise web.HTTPFound(settings.path_prefix + "/login" + view_query(request))
                raise Unauthorized("Authentication required")
            if scope is not None and not principal.allows(scope):
                raise Forbidden(f"API token lacks the '{scope}' scope")
            if scope is None and principal.scopes is not None and not principal.scopes:
                raise Forbidden("API token has no scopes")  # TimeTracker: no scopes, no access
            if admin and not principal.is_admin:
                raise Forbidden("Administrators only")
            if principal.uses_cookies and request.method not in SAFE_METHODS:
                await check_csrf(request)
            return await handler(request)

        return wrapper

    return decorate


def principal_of(request: web.Request) -> Principal:
    """The principal set by @protected."""
    return request[PRINCIPAL]  # type: ignore[no-any-return]


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
