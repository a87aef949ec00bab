"""Error mapping, security headers and request metrics, installed in one call."""

from __future__ import annotations

import logging
import time

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import keys
from gateway.errors import GatewayError

log = logging.getLogger(__name__)


def wants_json(request: web.Request) -> bool:
    path = request.path
    return (
        path.startswith("/api/")
        or path in {"/healthz", "/readyz"}
        or (
            "application/json" in request.headers.get("Accept", "")
            and "text/html" not in request.headers.get("Accept", "")
        )
    )


def _error_response(request: web.Request, status: int, body: dict[str, object]) -> web.Response:
    if wants_json(request):
        return web.json_response(body, status=status)
    try:
        return aiohttp_jinja2.render_template(
            "error.html", request, {"status": status, "message": body.get("error")}, status=status
        )
    except Exception:  # templates missing or broken: still answer plainly
        return web.Response(text=f"{status}: {body.get('error')}", status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Expected failures become their status; anything else a 500 without a stack trace."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return _error_response(request, exc.status, exc.payload())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return _error_response(request, exc.status, {"ok": False, "error": reason})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(request, 500, {"ok": False, "error": "Internal server error"})


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    settings = request.app[keys.SETTINGS]
    headers = response.headers
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
        f"frame-ancestors {settings.frame_ancestors}",
    )
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/api/") or request.path in {"/login", "/"}:
        headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[keys.METRICS]
    resource = request.match_info.route.resource
    # The route template, never the raw path: bounded label cardinality.
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.http_requests.labels(route, request.method, str(status)).inc()
        metrics.http_latency.labels(route).observe(time.perf_counter() - started)


def setup_middlewares(app: web.Application) -> None:
    # Order matters: metrics sees the final status, the error middleware turns exceptions into
    # answers before headers are added, so error pages get the security headers too.
    app.middlewares.extend([metrics_middleware, security_headers_middleware, error_middleware])
