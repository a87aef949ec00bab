"""GitHub connector: signed webhooks turn issues into tasks; admins can sync open issues."""

from __future__ import annotations

from aiohttp import web

from gateway import keys

PRUNE_JOB = "github_delivery_prune"


def setup(app: web.Application) -> None:
    """Install the connector: its service, common routes, webhook and sync routes."""
    from gateway.connectors.github.handlers import routes
    from gateway.connectors.github.service import GitHubConnector, prune_deliveries
    from gateway.scheduler import Job, JobReport

    connector = GitHubConnector(app)
    app[keys.CONNECTORS][connector.slug] = connector
    connector.install_common_routes(app)
    app.add_routes(routes)

    async def prune() -> JobReport:
        removed = await prune_deliveries(app[keys.DB])
        return JobReport(job=PRUNE_JOB, succeeded=1, detail={"removed": removed})

    app[keys.SCHEDULER].register(
        Job(PRUNE_JOB, "23 3 * * *", prune, "forget GitHub delivery ids older than 14 days")
    )
