"""The app factory: settings in, a wired aiohttp Application out; no work at import."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import setup as setup_sessions

from gateway import __version__, keys
from gateway.auth.identity import SessionCookieStorage
from gateway.auth.timetracker import TimeTrackerCookies
from gateway.connectors.github import setup as setup_github
from gateway.connectors.http import HttpClient
from gateway.crypto import SecretBox, load_or_create_primary_key
from gateway.db.database import Database
from gateway.db.resilience import outbound_trace
from gateway.events import EventBus
from gateway.metrics import Metrics
from gateway.scheduler import Scheduler
from gateway.settings import Settings
from gateway.timer import handlers as timer_handlers
from gateway.timer.service import TimerService
from gateway.web import ops, pages
from gateway.web.middleware import setup_middlewares

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
SESSION_COOKIE = "tt_gateway_session"
SESSION_MAX_AGE = 12 * 3600
# Webhook receivers read their own (larger) bodies from the stream with their own cap.
CLIENT_MAX_SIZE = 1024 * 1024

# Each connector package exposes setup(app); this tuple is the one place connectors are wired.
CONNECTOR_SETUPS: tuple[Callable[[web.Application], None], ...] = (setup_github,)


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
) -> web.Application:
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[keys.SETTINGS] = settings

    primary, _source = load_or_create_primary_key(
        settings.encryption_key, settings.encryption_key_file, settings.data_dir
    )
    secrets = SecretBox(primary, settings.encryption_old_keys)
    app[keys.SECRETS] = secrets
    db = Database(settings.database_url, env_tz=settings.tz, timeout=settings.db_timeout)
    app[keys.DB] = db
    metrics = Metrics()
    app[keys.METRICS] = metrics
    events = EventBus()
    app[keys.EVENTS] = events
    app[keys.TIMER] = TimerService(db, events)
    app[keys.SCHEDULER] = Scheduler(db, metrics)
    app[keys.TT_COOKIES] = (
        TimeTrackerCookies(settings.timetracker_secret_key)
        if settings.timetracker_secret_key
        else None
    )
    app[keys.CONNECTORS] = {}

    setup_middlewares(app)
    # Sessions after the error middleware: their cookie is saved on redirects too.
    setup_sessions(
        app,
        SessionCookieStorage(
            secrets.derive(b"tt-gateway session cookie"),
            cookie_name=SESSION_COOKIE,
            httponly=True,
            samesite="Lax",
            secure=settings.secure_cookies,
            path=settings.path_prefix or "/",
            max_age=SESSION_MAX_AGE,
        ),
    )
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    env.globals.update(_jinja_globals(settings))

    app.add_routes(ops.routes)
    app.add_routes(pages.routes)
    app.add_routes(timer_handlers.routes)
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)

    for setup_connector in CONNECTOR_SETUPS:
        setup_connector(app)

    run_scheduler = settings.scheduler if start_scheduler is None else start_scheduler
    app.cleanup_ctx.append(_database_ctx)
    app.cleanup_ctx.append(_http_ctx(http_session_factory))
    app.cleanup_ctx.append(_events_ctx)
    if run_scheduler:
        app.cleanup_ctx.append(_scheduler_ctx)
    return app


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    db = app[keys.DB]
    await db.inspect_optional_tables()
    yield
    await db.dispose()


def _http_ctx(
    factory: Callable[[], aiohttp.ClientSession] | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        session = (
            factory()
            if factory
            else aiohttp.ClientSession(
                headers={"User-Agent": f"tt-gateway/{__version__}"},
                timeout=aiohttp.ClientTimeout(total=10),
                trace_configs=[outbound_trace()],
            )
        )
        app[keys.HTTP] = HttpClient(session, app[keys.METRICS])
        yield
        await session.close()

    return ctx


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    # Let in-flight notifications finish before the HTTP session closes, within what is left
    # of the shutdown budget (the container is killed soon after it).
    budget = app[keys.SETTINGS].shutdown_timeout
    await app[keys.EVENTS].drain(grace=app[keys.LIFECYCLE].remaining(min(budget, 10.0)))


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[keys.SCHEDULER]
    scheduler.start()
    yield
    await scheduler.stop()
