"""Slack HTTP adapter: one signed URL for commands, interactivity and events (the pipeline)."""

from __future__ import annotations

from aiohttp import web

from gateway.connectors.slack.service import SlackConnector
from gateway.connectors.webhooks import WebhookPipeline


def install_routes(app: web.Application, slack: SlackConnector, pipeline: WebhookPipeline) -> None:
    async def events(request: web.Request) -> web.Response:
        return await pipeline.handle(request, slack)

    app.router.add_post("/api/integrations/slack/events", events, name="slack_events")
