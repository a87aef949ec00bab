"""Embedding in TimeTracker's settings page: cross-site session cookie, embed mode, view options."""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import hdrs, web
from aiohttp_session.cookie_storage import EncryptedCookieStorage

THEMES = ("dark", "light")
# Query parameters that choose how the page looks; kept across the login redirects.
VIEW_PARAMS = ("embed", "theme")


def _site(host: str) -> str:
    """The site of a host name, approximated as its last two labels (no public-suffix list:
    `a.example.co.uk` and `b.example.co.uk` count as cross-site, which only errs towards the
    cross-site cookie). IP addresses are their own site."""
    host = host.strip(".").lower()
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        return ".".join(host.split(".")[-2:])


def cross_site_ancestors(frame_ancestors: str, public_url: str) -> bool:
    """Whether a CSP `frame-ancestors` source list allows a page of another site to embed us.

    Then the browser treats the iframe as third-party: a SameSite=Lax cookie is never sent, so
    the session cookie must be `SameSite=None; Secure; Partitioned` (CHIPS) for sign-in to work.
    """
    own = _site(urlsplit(public_url).hostname or "")
    for raw in frame_ancestors.split():
        source = raw.strip().lower()
        if source in {"'self'", "'none'"} or not source:
            continue
        if source == "*" or (source.endswith(":") and "/" not in source):
            return True  # any host, or a scheme source such as `https:`
        host = urlsplit(source if "://" in source else "//" + source).hostname or ""
        host = host.removeprefix("*.")
        if not host or _site(host) != own:
            return True
    return False


class SessionCookieStorage(EncryptedCookieStorage):
    """The encrypted session cookie, optionally `Partitioned` (CHIPS), deaf to cookies that
    cannot be Fernet tokens.

    Neither aiohttp_session nor Python's http.cookies before 3.14 know the attribute, so the
    cookie is rendered as usual and written as a raw Set-Cookie header with `; Partitioned`
    added. Deleting it needs the same attributes too: a partitioned cookie is only replaced by
    a partitioned one.
    """

    def __init__(self, secret_key: bytes, *, partitioned: bool = False, **kwargs: Any) -> None:
        super().__init__(secret_key, **kwargs)
        self.partitioned = partitioned

    def load_cookie(self, request: web.Request) -> str | None:
        # Header bytes that are not UTF-8 reach us as surrogate escapes, which the parent
        # cannot encode (a 500): such a cookie is simply no session.
        cookie = super().load_cookie(request)
        if cookie is not None and not cookie.isascii():
            return None
        return cookie

    def save_cookie(
        self, response: web.StreamResponse, cookie_data: str, *, max_age: int | None = None
    ) -> None:
        if not self.partitioned:
            super().save_cookie(response, cookie_data, max_age=max_age)
            return
        params = dict(self._cookie_params)
        if not cookie_data:
            max_age = 0
        if max_age is not None:
            params["max_age"] = max_age
            params["expires"] = time.strftime(
                "%a, %d-%b-%Y %T GMT", time.gmtime(time.time() + max_age if max_age else 0)
            )
        response.set_cookie(self._cookie_name, cookie_data, **params)
        morsel = response.cookies[self._cookie_name]
        del response.cookies[self._cookie_name]
        response.headers.add(hdrs.SET_COOKIE, morsel.OutputString() + "; Partitioned")


def session_cookie_params(frame_ancestors: str, public_url: str, secure: bool) -> dict[str, Any]:
    """SameSite/Secure/Partitioned for the session cookie (DESIGN §6: Lax unless embedded
    cross-site; then None, which browsers accept only with Secure)."""
    if cross_site_ancestors(frame_ancestors, public_url):
        return {"samesite": "None", "secure": True, "partitioned": True}
    return {"samesite": "Lax", "secure": secure, "partitioned": False}


def is_embedded(request: web.Request) -> bool:
    """`?embed=1`, or a navigation the browser says is for an iframe (Sec-Fetch-Dest)."""
    flag = request.query.get("embed")
    if flag is not None:
        return flag.strip().lower() in {"1", "true", "yes", "on"}
    return request.headers.get("Sec-Fetch-Dest") == "iframe"


def theme_of(request: web.Request) -> str | None:
    theme = request.query.get("theme", "").strip().lower()
    return theme if theme in THEMES else None


def view_query(request: web.Request) -> str:
    """'?embed=1&theme=dark' (only the view parameters, normalised), or ''."""
    params: dict[str, str] = {}
    if request.query.get("embed") is not None:
        params["embed"] = "1" if is_embedded(request) else "0"
    theme = theme_of(request)
    if theme:
        params["theme"] = theme
    return "?" + urlencode(params) if params else ""


async def template_context(request: web.Request) -> dict[str, Any]:
    """Every page (error pages too) knows whether it is embedded and which theme was asked."""
    return {
        "embedded": is_embedded(request),
        "theme": theme_of(request),
        "view_query": view_query(request),
    }
