"""Slack connector: /tt slash command, timer notifications with a Stop button, daily summary."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.connectors.plugin import ConnectorPlugin
from gateway.connectors.routes import install_common_routes
from gateway.connectors.slack.handlers import install_routes
from gateway.connectors.slack.service import SUMMARY_JOB, SUMMARY_SPEC, SlackConnector
from gateway.scheduler import Job, JobReport

KEY: web.AppKey[SlackConnector] = web.AppKey("slack_connector", SlackConnector)
PRUNE_JOB = "slack_delivery_prune"


def build(services: Any) -> SlackConnector:
    """The connector, its outbox subscriber (notifications), the summary and prune jobs."""
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

    async def prune() -> JobReport:
        removed = await connector.prune_deliveries()
        return JobReport(job=PRUNE_JOB, succeeded=1, detail={"removed": removed})

    services.scheduler.register(
        Job(PRUNE_JOB, "41 3 * * *", prune, "forget Slack event ids older than 14 days")
    )
    return connector


def install(app: web.Application, connector: SlackConnector, services: Any) -> None:
    app[KEY] = connector
    install_common_routes(app, connector)
    install_routes(app, connector, services.pipeline)


PLUGIN = ConnectorPlugin("slack", build, install)
