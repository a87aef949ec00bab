"""Typed keys for everything the app stores, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.auth.timetracker import TimeTrackerCookies
    from gateway.connectors.http import HttpClient
    from gateway.crypto import SecretBox
    from gateway.db.database import Database
    from gateway.events import EventBus
    from gateway.metrics import Metrics
    from gateway.outbox import TimerOutbox
    from gateway.scheduler import Scheduler
    from gateway.settings import Settings
    from gateway.timer.service import TimerService

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
DB: web.AppKey[Database] = web.AppKey("db")
SECRETS: web.AppKey[SecretBox] = web.AppKey("secrets")
HTTP: web.AppKey[HttpClient] = web.AppKey("http")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
EVENTS: web.AppKey[EventBus] = web.AppKey("events")
TIMER: web.AppKey[TimerService] = web.AppKey("timer")
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler")
TT_COOKIES: web.AppKey[TimeTrackerCookies | None] = web.AppKey("tt_cookies")
OUTBOX: web.AppKey[TimerOutbox] = web.AppKey("outbox")
# Each connector's own key lives in its package (e.g. gateway.connectors.github.KEY).

__all__ = [
    "DB",
    "EVENTS",
    "HTTP",
    "METRICS",
    "OUTBOX",
    "SCHEDULER",
    "SECRETS",
    "SETTINGS",
    "TIMER",
    "TT_COOKIES",
]
