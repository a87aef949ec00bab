"""Error mapping, security headers, request metrics and shutdown handling, installed in one call."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from dataclasses import dataclass, field

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from gateway import keys
from gateway.db.resilience import (
    RETRY_AFTER_SECONDS,
    begin_trace,
    end_trace,
    is_database_unavailable,
    is_stale_connection,
)
from gateway.errors import GatewayError, ServiceUnavailable, UnsupportedMediaType
from gateway.logs import install_aiohttp_log_filter

log = logging.getLogger(__name__)

# Content codings aiohttp decodes for us (RFC 9110 §8.4.1); anything else is refused with 415
# before a handler reads the body as if it were plain (br/zstd without their libraries are
# refused by aiohttp's parser itself, with a 400).
ACCEPTED_CODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br", "zstd"})
LOGGED_PATH_MAX = 120


@dataclass
class Lifecycle:
    """Requests in flight and whether the app is shutting down (state the app may change)."""

    shutting_down: bool = False
    inflight: dict[int, web.Request] = field(default_factory=dict)  # by id(): unhashable
    shutdown_started: float | None = None

    def remaining(self, budget: float, floor: float = 0.5) -> float:
        """What is left of a shutdown budget of `budget` seconds (at least `floor`)."""
        if self.shutdown_started is None:
            return max(budget, floor)
        return max(budget - (time.monotonic() - self.shutdown_started), floor)


LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle", Lifecycle)


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


def loggable_path(request: web.Request) -> str:
    """The path as a log line may show it: bounded, whatever a client sends."""
    path = request.path
    if len(path) <= LOGGED_PATH_MAX:
        return path
    return f"{path[:LOGGED_PATH_MAX]}…({len(path)} chars)"


def _error_response(
    request: web.Request,
    status: int,
    body: dict[str, object],
    headers: dict[str, str] | None = None,
) -> web.Response:
    if wants_json(request):
        response = web.json_response(body, status=status)
    else:
        try:
            response = aiohttp_jinja2.render_template(
                "error.html",
                request,
                {"status": status, "message": body.get("error")},
                status=status,
            )
        except Exception:  # templates missing or broken: still answer plainly
            response = web.Response(text=f"{status}: {body.get('error')}", status=status)
    if headers:
        response.headers.update(headers)
    return response


def _check_content_encoding(request: web.Request) -> None:
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in ACCEPTED_CODINGS:
        raise UnsupportedMediaType("Unsupported Content-Encoding: send gzip, deflate or none")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Expected failures become their status; anything else a 500 without a stack trace."""
    try:
        _check_content_encoding(request)
        return await handler(request)
    except GatewayError as exc:
        return _error_response(request, exc.status, exc.payload(), getattr(exc, "headers", None))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return _error_response(request, exc.status, {"ok": False, "error": reason})
    except RequestPayloadError:
        # The body did not decode (invalid gzip/deflate data) or arrived broken: the client's
        # fault. No keep-alive: what is left of that body is not worth reading.
        response = _error_response(
            request, 400, {"ok": False, "error": "The request body could not be decoded"}
        )
        response.force_close()
        return response
    except OSError as exc:
        if _is_static(request) and exc.errno in {errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP}:
            # A file name the file system refuses (too long, ...) names no file we serve.
            return _error_response(request, 404, {"ok": False, "error": "Not Found"})
        return _unhandled(request)
    except Exception:
        return _unhandled(request)


def _unhandled(request: web.Request) -> web.Response:
    log.exception("unhandled error on %s %s", request.method, loggable_path(request))
    return _error_response(request, 500, {"ok": False, "error": "Internal server error"})


def _is_static(request: web.Request) -> bool:
    return isinstance(request.match_info.route.resource, web.StaticResource)


@web.middleware
async def database_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Database outages answer 503 with Retry-After, logged once per outage, not per request.

    After a quiet restart of PostgreSQL the pool's connections are dead and the first
    statement on one fails; SQLAlchemy then invalidates the pool. Such a request is run once
    more, on a new connection, when it left no trace: no COMMIT started, no autocommit
    statement, no outbound call, and a body that can be read again. Anything else would
    risk doing a write twice, so it answers 503 and the client decides.
    """
    health = request.app[keys.DB].health
    trace, token = begin_trace()
    try:
        try:
            return await handler(request)
        except Exception as exc:
            if not (
                is_stale_connection(exc) and not trace.left_trace and _body_rereadable(request)
            ):
                raise
            trace.retried = True
            log.info(
                "retrying %s %s once: its database connection had died",
                request.method,
                loggable_path(request),
            )
            return await handler(request)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        health.failed(exc)
        raise ServiceUnavailable(
            "The database is unavailable; try again shortly", retry_after=RETRY_AFTER_SECONDS
        ) from None
    finally:
        end_trace(token)


def _body_rereadable(request: web.Request) -> bool:
    """Whether a second run of the handler sees the same body: none, not read yet, or read
    through read()/post(), which cache it (a stream read by hand is gone)."""
    if not request.body_exists:
        return True
    if getattr(request.content, "_cursor", None) == 0:  # not a byte consumed yet
        return True
    return getattr(request, "_read_bytes", None) is not None or (
        getattr(request, "_post", None) is not None
    )


@web.middleware
async def shutdown_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests still running when the graceful period of a shutdown ends.

    aiohttp then fails the request's body stream with CancelledError (a handler waiting for
    an upload gets it), and later cancels the handler task itself. The first is answered
    503 (the client may retry on another replica); both are logged, so the log says what
    was cut.
    """
    lifecycle = request.app[LIFECYCLE]
    inflight = lifecycle.inflight
    started = time.monotonic()
    inflight[id(request)] = request
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if not lifecycle.shutting_down:
            raise
        elapsed = time.monotonic() - started
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # the task itself: nothing can answer
            log.warning(
                "shutdown: cut %s %s after %.1f s (no answer sent)",
                request.method,
                loggable_path(request),
                elapsed,
            )
            raise
        log.warning(
            "shutdown: cut %s %s after %.1f s while it was still receiving its body (answered 503)",
            request.method,
            loggable_path(request),
            elapsed,
        )
        response = _error_response(
            request,
            503,
            {"ok": False, "error": "The server is shutting down; try again"},
            {"Retry-After": "1"},
        )
        response.force_close()
        return response
    finally:
        inflight.pop(id(request), None)


async def _on_shutdown(app: web.Application) -> None:
    """aiohttp's on_shutdown runs before it waits for in-flight requests: say what it waits for."""
    lifecycle = app[LIFECYCLE]
    lifecycle.shutting_down = True
    lifecycle.shutdown_started = time.monotonic()
    pending = list(lifecycle.inflight.values())
    if pending:
        shown = ", ".join(f"{r.method} {loggable_path(r)}" for r in pending[:10])
        log.warning(
            "shutting down: waiting up to %g s for %d request(s) in flight: %s",
            app[keys.SETTINGS].shutdown_timeout,
            len(pending),
            shown,
        )


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
    # answers before headers are added, so error pages get the security headers too. The
    # shutdown middleware answers cut uploads through the error page; the database middleware
    # is innermost, so a retry re-runs only the handler.
    app[LIFECYCLE] = Lifecycle()
    app.on_shutdown.append(_on_shutdown)
    app.middlewares.extend(
        [
            metrics_middleware,
            security_headers_middleware,
            error_middleware,
            shutdown_middleware,
            database_middleware,
        ]
    )
    install_aiohttp_log_filter()  # malformed requests: a WARNING line each, not a traceback
