"""Baselines: bare aiohttp handlers doing the least a receiver must do.

- GitHub webhook: one HMAC check, one asyncpg INSERT.
- Slack `/tt status` (with --slack-secret): Slack's v0 signature and timestamp checked, one SELECT
  of the user's running timer, an ephemeral JSON answer.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import time
from urllib.parse import parse_qs

import asyncpg
from aiohttp import web


def build(
    dsn: str, secret: bytes, slack_secret: bytes | None = None, slack_user: int = 0
) -> web.Application:
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

    async def slack(request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers.get("X-Slack-Request-Timestamp", "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > 300 or slack_secret is None:
            return web.json_response({"ok": False}, status=401)
        base = b"v0:" + ts.encode() + b":" + body
        expected = "v0=" + hmac.new(slack_secret, base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Slack-Signature", "")):
            return web.json_response({"ok": False}, status=401)
        form = parse_qs(body.decode())
        async with request.app["pool"].acquire() as conn:
            row = await conn.fetchrow(
                "SELECT te.id, te.start_time, p.name FROM time_entries te "
                "JOIN projects p ON p.id = te.project_id "
                "WHERE te.user_id = $1 AND te.end_time IS NULL ORDER BY te.id DESC LIMIT 1",
                slack_user,
            )
        text = f"Running on *{row['name']}* since {row['start_time']:%H:%M}" if row else "No timer"
        return web.json_response(
            {"response_type": "ephemeral", "text": text, "user": form.get("user_id", [""])[0]}
        )

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/api/integrations/github/webhook", receive)
    app.router.add_post("/api/integrations/slack/events", slack)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--slack-secret")
    parser.add_argument("--slack-user", type=int, default=0, help="TimeTracker user id for /tt")
    args = parser.parse_args()
    slack = args.slack_secret.encode() if args.slack_secret else None
    web.run_app(
        build(args.dsn, args.secret.encode(), slack, args.slack_user),
        host="127.0.0.1", port=args.port, print=None, access_log=None,
    )


if __name__ == "__main__":
    main()
