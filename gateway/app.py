"""The app factory: settings in, a wired aiohttp Application out; no work at import."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import lru_cache

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import setup as setup_sessions

from gateway import __version__, assets, keys
from gateway.auth.timetracker import TimeTrackerCookies
from gateway.connectors.registry import PLUGINS
from gateway.services import SERVICES, build_services
from gateway.settings import Settings
from gateway.timer import handlers as timer_handlers
from gateway.timeutil import Clock, utcnow
from gateway.web import embedding, ops, pages
from gateway.web.middleware import LIFECYCLE, setup_middlewares

log = logging.getLogger(__name__)

TEMPLATES_DIR = assets.directory("templates")
STATIC_DIR = assets.directory("static")
SESSION_COOKIE = "tt_gateway_session"
SESSION_MAX_AGE = 12 * 3600
# Webhook receivers read their own (larger) bodies from the stream with their own cap.
CLIENT_MAX_SIZE = 1024 * 1024


@lru_cache(maxsize=256)
def _static_version(path: str) -> str:
    try:
        return hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:10]
    except OSError:
        return __version__


def _jinja_globals(settings: Settings) -> dict[str, object]:
    prefix = settings.path_prefix

    def static(path: str) -> str:
        return f"{prefix}/static/{path}?v={_static_version(path)}"

    return {"prefix": prefix, "static": static, "version": __version__}


def create_app(
    settings: Settings,
    *,
    http_session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    start_scheduler: bool | None = None,
    clock: Clock = utcnow,
    dispatch_events: bool = True,
) -> web.Application:
    """The web app: services, every connector and its routes, pages and operations."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    services = build_services(settings, clock=clock, http_session_factory=http_session_factory)
    app[SERVICES] = services
    app[keys.SETTINGS] = settings
    app[keys.SECRETS] = services.secrets
    app[keys.DB] = services.db
    app[keys.METRICS] = services.metrics
    app[keys.EVENTS] = services.events
    app[keys.OUTBOX] = services.outbox
    app[keys.TIMER] = services.timer
    app[keys.SCHEDULER] = services.scheduler
    app[keys.HTTP] = services.http
    app[keys.TT_COOKIES] = (
        TimeTrackerCookies(settings.timetracker_secret_key)
        if settings.timetracker_secret_key
        else None
    )

    setup_middlewares(app)
    # Sessions after the error middleware: their cookie is saved on redirects too.
    # SameSite=Lax, unless GATEWAY_FRAME_ANCESTORS lets another site embed the page: a
    # third-party iframe never gets a Lax cookie, so then SameSite=None; Secure; Partitioned.
    setup_sessions(
        app,
        embedding.SessionCookieStorage(
            services.secrets.derive(b"tt-gateway session cookie"),
            cookie_name=SESSION_COOKIE,
            httponly=True,
            path=settings.path_prefix or "/",
            max_age=SESSION_MAX_AGE,
            **embedding.session_cookie_params(
                settings.frame_ancestors, settings.public_url, settings.secure_cookies
            ),
        ),
    )
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        context_processors=[embedding.template_context],
    )
    env.globals.update(_jinja_globals(settings))

    app.add_routes(ops.routes)
    app.add_routes(pages.routes)
    app.add_routes(timer_handlers.routes)
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)

    for plugin in PLUGINS:
        plugin.install(app, services.connectors[plugin.slug], services)

    run_scheduler = settings.scheduler if start_scheduler is None else start_scheduler
    app.cleanup_ctx.append(_services_ctx(dispatch_events))
    if run_scheduler:
        app.cleanup_ctx.append(_scheduler_ctx)
    return app


def _services_ctx(dispatch_events: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        # In-flight notifications get what is left of the shutdown budget (the container is
        # killed soon after it) before the HTTP client closes.
        budget = min(app[keys.SETTINGS].shutdown_timeout, 10.0)
        async with app[SERVICES].running(
            dispatch_events=dispatch_events,
            drain_grace=lambda: app[LIFECYCLE].remaining(budget),
        ):
            yield

    return ctx


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[keys.SCHEDULER]
    scheduler.start()
    yield
    await scheduler.stop()
