"""Google HTTP adapters: the OAuth consent redirect and callback, the card's disconnect, sync."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_session import get_session

from gateway.auth.identity import principal_of, protected
from gateway.connectors.google import core
from gateway.connectors.google.service import GoogleCalendarConnector

log = logging.getLogger(__name__)

SESSION_KEY = "google_oauth"  # the pending consent, in the encrypted session cookie


def _cards(connector: GoogleCalendarConnector, **query: str) -> web.HTTPFound:
    """A redirect to the cards page, with `google=…` or `google_error=<reason>`."""
    url = connector.settings.path_prefix + "/"
    if query:
        url += "?" + urlencode(query)
    return web.HTTPFound(url)


def install_routes(app: web.Application, google: GoogleCalendarConnector) -> None:
    @protected("write:integrations", page=True)
    async def connect(request: web.Request) -> web.StreamResponse:
        user = principal_of(request).user
        if not google.oauth_configured:
            raise _cards(google, google_error="oauth_not_configured")
        verifier, challenge = core.new_pkce()
        pending = core.OAuthState(
            state=core.new_state(), verifier=verifier, created_at=google.now(), user_id=user.id
        )
        session = await get_session(request)
        session[SESSION_KEY] = pending.to_session()
        hint = await google.stored_email(user.id)
        raise web.HTTPFound(google.consent_url(pending.state, challenge, login_hint=hint))

    @protected("write:integrations", page=True)
    async def callback(request: web.Request) -> web.StreamResponse:
        user = principal_of(request).user
        session = await get_session(request)
        # Single-use: the pending consent leaves the session whatever the outcome.
        pending = core.OAuthState.from_session(session.pop(SESSION_KEY, None))
        if pending is not None and pending.user_id != user.id:
            pending = None  # started by another user of this browser
        checked = core.check_callback(request.query, pending, google.now())
        if isinstance(checked, core.CallbackError):
            log.info("google callback for user %s refused: %s", user.id, checked.reason)
            raise _cards(google, google_error=checked.reason)
        assert pending is not None
        if not await google.claim_state(pending.state):  # a replayed cookie
            log.info("google callback for user %s refused: state_reused", user.id)
            raise _cards(google, google_error="state_reused")
        reason = await google.complete(user, checked.code, checked.verifier)
        if reason is not None:
            raise _cards(google, google_error=reason)
        raise _cards(google, google="connected")

    @protected("write:integrations", page=True)
    async def disconnect_form(request: web.Request) -> web.StreamResponse:
        await google.disconnect(principal_of(request).user)
        raise _cards(google, google="disconnected")

    @protected("write:integrations")
    async def sync(request: web.Request) -> web.Response:
        status, answer = await google.sync(principal_of(request).user)
        return web.json_response(answer, status=status)

    @protected("read:integrations")
    async def calendars(request: web.Request) -> web.Response:
        status, answer = await google.calendars(principal_of(request).user)
        return web.json_response(answer, status=status)

    app.router.add_get("/integrations/google/connect", connect, name="google_connect")
    app.router.add_get("/api/integrations/google/calendars", calendars, name="google_calendars")
    app.router.add_get("/integrations/google/callback", callback, name="google_callback")
    app.router.add_post(
        "/integrations/google/disconnect", disconnect_form, name="google_disconnect_form"
    )
    app.router.add_post("/api/integrations/google/sync", sync, name="google_sync")
