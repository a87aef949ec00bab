"""GitHub connector: signed webhooks turn issues into tasks; admins can sync open issues."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.connectors.github.handlers import install_routes
from gateway.connectors.github.service import DELIVERY_RETENTION_SECONDS, GitHubConnector
from gateway.connectors.plugin import ConnectorPlugin
from gateway.connectors.routes import install_common_routes
from gateway.scheduler import Job, JobReport

KEY: web.AppKey[GitHubConnector] = web.AppKey("github_connector", GitHubConnector)
PRUNE_JOB = "github_delivery_prune"


def build(services: Any) -> GitHubConnector:
    """The connector and its daily job that forgets old delivery ids."""
    connector = GitHubConnector(services.deps, services.runner)

    async def prune() -> JobReport:
        removed = await services.pipeline.deliveries.prune("github", DELIVERY_RETENTION_SECONDS)
        return JobReport(job=PRUNE_JOB, succeeded=1, detail={"removed": removed})

    services.scheduler.register(
        Job(PRUNE_JOB, "23 3 * * *", prune, "forget GitHub delivery ids older than 14 days")
    )
    return connector


def install(app: web.Application, connector: GitHubConnector, services: Any) -> None:
    app[KEY] = connector
    install_common_routes(app, connector)
    install_routes(app, connector, services.pipeline)


PLUGIN = ConnectorPlugin("github", build, install)
