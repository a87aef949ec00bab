"""GitHub HTTP adapters: the webhook goes through the shared pipeline; admins sync on demand."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.identity import principal_of, protected
from gateway.connectors.github.service import GitHubConnector
from gateway.connectors.webhooks import WebhookPipeline


def install_routes(app: web.Application, github: GitHubConnector, pipeline: WebhookPipeline) -> None:
    async def webhook(request: web.Request) -> web.Response:
        return await pipeline.handle(request, github)

    @protected("write:integrations", admin=True)
    async def sync(request: web.Request) -> web.Response:
        status, answer = await github.sync(principal_of(request).user)
        return web.json_response(answer, status=status)

    app.router.add_post("/api/integrations/github/webhook", webhook, name="github_webhook")
    app.router.add_post("/api/integrations/github/sync", sync, name="github_sync")
