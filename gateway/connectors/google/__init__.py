"""Google Calendar connector: OAuth consent, events imported as entries, entries exported."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from gateway.connectors.google.handlers import install_routes
from gateway.connectors.google.service import (
    JOB,
    JOB_SPEC,
    GoogleCalendarConnector,
    callback_message,
)
from gateway.connectors.plugin import ConnectorPlugin
from gateway.connectors.routes import install_common_routes

KEY: web.AppKey[GoogleCalendarConnector] = web.AppKey(
    "google_calendar_connector", GoogleCalendarConnector
)


def build(services: Any) -> GoogleCalendarConnector:
    """The connector and its half-hourly sync job (integrations needing a reconnect skipped)."""
    connector = GoogleCalendarConnector(services.deps, services.runner)
    services.scheduler.register(
        services.runner.job(
            JOB,
            JOB_SPEC,
            connector,
            connector.sync_work,
            "import Google Calendar events and export finished time entries",
            eligible=connector.eligible,
        )
    )
    return connector


def install(app: web.Application, connector: GoogleCalendarConnector, services: Any) -> None:
    app[KEY] = connector
    install_common_routes(app, connector)
    install_routes(app, connector)
    env = aiohttp_jinja2.get_env(app)
    if env is not None:  # the card shows why a connection failed (?google_error=<reason>)
        env.globals["google_callback_message"] = callback_message


PLUGIN = ConnectorPlugin("google", build, install)
