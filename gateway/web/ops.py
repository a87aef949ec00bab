"""Operations endpoints: liveness, readiness (database reachable), Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from gateway import __version__, keys
from gateway.db.resilience import RETRY_AFTER_SECONDS, is_database_unavailable
from gateway.metrics import CONTENT_TYPE_LATEST

routes = web.RouteTableDef()
log = logging.getLogger(__name__)


@routes.get("/healthz", name="healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "version": __version__})


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    db = request.app[keys.DB]
    try:
        async with asyncio.timeout(3):
            await db.ping()
    except Exception as exc:
        if not isinstance(exc, TimeoutError | SQLAlchemyError | OSError) and not (
            is_database_unavailable(exc)
        ):
            raise
        db.health.failed(exc)  # logged once per outage, not per probe
        return web.json_response(
            {"ok": False, "error": "database unreachable"},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return web.json_response({"ok": True, "database": "ok"})


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[keys.METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
