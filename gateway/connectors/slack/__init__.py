"""Slack connector: /tt slash command, timer notifications with a Stop button, daily summary."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.connectors.plugin import ConnectorPlugin
from gateway.connectors.routes import install_common_routes
from gateway.connectors.slack.handlers import install_routes
from gateway.connectors.slack.service import SUMMARY_JOB, SUMMARY_SPEC, SlackConnector
from gateway.scheduler import Job

KEY: web.AppKey[SlackConnector] = web.AppKey("slack_connector", SlackConnector)


def build(services: Any) -> SlackConnector:
    """The connector, its outbox subscriber (notifications), the summary job."""
    connector = SlackConnector(services.deps, services.runner, services.events)
    services.outbox.subscribe("slack", connector.on_timer_event)
    services.scheduler.register(
        Job(
            SUMMARY_JOB,
            SUMMARY_SPEC,
            connector.run_daily_summary,
            "post each user's daily summary to Slack at their chosen local time",
        )
    )

    return connector


def install(app: web.Application, connector: SlackConnector, services: Any) -> None:
    app[KEY] = connector
    install_common_routes(app, connector)
    install_routes(app, connector, services.pipeline)


PLUGIN = ConnectorPlugin("slack", build, install)
