"""Baseline for the webhook benchmark: a bare aiohttp handler, one HMAC check, one asyncpg INSERT."""

from __future__ import annotations

import argparse
import hashlib
import hmac

import asyncpg
from aiohttp import web


def build(dsn: str, secret: bytes) -> web.Application:
    app = web.Application(client_max_size=25 * 1024 * 1024)

    async def pool_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        pool = await asyncpg.create_pool(dsn, min_size=4, max_size=10)
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_baseline_deliveries "
                "(id serial PRIMARY KEY, delivery text, event text, size int)"
            )
        app["pool"] = pool
        yield
        await pool.close()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return web.json_response({"ok": False}, status=401)
        async with request.app["pool"].acquire() as conn:
            await conn.execute(
                "INSERT INTO bench_baseline_deliveries (delivery, event, size) VALUES ($1, $2, $3)",
                request.headers.get("X-GitHub-Delivery"),
                request.headers.get("X-GitHub-Event"),
                len(body),
            )
        return web.json_response({"ok": True})

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/api/integrations/github/webhook", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    web.run_app(build(args.dsn, args.secret.encode()), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
