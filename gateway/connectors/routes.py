"""The HTTP surface every connector shares: status, config, test and disconnect (DESIGN §7)."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.identity import principal_of, protected
from gateway.connectors.base import Connector
from gateway.web.jsonio import read_json_object


def install_common_routes(app: web.Application, connector: Connector) -> None:
    """GET status; POST config, test and disconnect under /api/integrations/{slug}/."""
    base = f"/api/integrations/{connector.slug}"

    @protected("read:integrations")
    async def status(request: web.Request) -> web.Response:
        return web.json_response(await connector.status(principal_of(request).user))

    @protected("write:integrations")
    async def config(request: web.Request) -> web.Response:
        body = await read_json_object(request)
        return web.json_response(await connector.save(principal_of(request).user, body))

    @protected("write:integrations")
    async def test(request: web.Request) -> web.Response:
        return web.json_response(await connector.test(principal_of(request).user))

    @protected("write:integrations")
    async def disconnect(request: web.Request) -> web.Response:
        return web.json_response(await connector.disconnect(principal_of(request).user))

    slug = connector.slug
    app.router.add_get(f"{base}/status", status, name=f"{slug}_status")
    app.router.add_post(f"{base}/config", config, name=f"{slug}_config")
    app.router.add_post(f"{base}/test", test, name=f"{slug}_test")
    app.router.add_post(f"{base}/disconnect", disconnect, name=f"{slug}_disconnect")
