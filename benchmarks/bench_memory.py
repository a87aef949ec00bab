"""Soak: the gateway's memory under many webhooks, and a compressed day of scheduled jobs.

Usage: python benchmarks/bench_memory.py [--webhooks 30000] [--days 2] [--quick]

1. Webhooks. A real gateway process (`python -m gateway`) on a fresh PostgreSQL database with
   one GitHub integration; signed `issues.opened` deliveries (a new issue and delivery id each,
   so each creates a task) from 32 concurrent senders. The gateway's RSS (VmRSS) is read after
   1,000 deliveries and at checkpoints up to --webhooks (default 30,000: 20 s to 2 minutes
   on the shared two-core machine, depending on its load; --webhooks 100000 is the issue's
   number, from about 80 s on a quiet machine to over 5 minutes on a busy one). Target: RSS after all of them no more than RSS after
   1,000 + max(8 MiB, 5%) (noise: allocator arenas, the pools' statement caches), and no steady
   climb (the last half adds at most 2 MiB).

2. Days of jobs, compressed. The gateway's services as `run-job` builds them
   (`build_services`, the timer-event dispatcher running, LISTEN included) with an injected
   clock; for each half-hour slot of --days days (default 2: 96 slots) the clock moves on and
   every job whose cron fires in that slot is run through `Scheduler.run(name, slot=…)`, as the
   cron tick would: the Google Calendar sync of 10 users (a local fake Google, tokens
   refreshed as they expire, one user failing with invalid_grant), Slack daily summaries of 10
   users at different times (a local fake Slack), and the prune jobs. After each slot: this
   process's asyncio tasks, open file descriptors (/proc/self/fd), the database's connections
   (pg_stat_activity) and the pool's checked-out connections. The first day warms the pools up
   (the database pool and the HTTP client open connections as concurrency first needs them);
   the days after repeat the same schedule. Target: no later day needs more tasks, file
   descriptors or connections than the first, and none is checked out between slots. This
   process's RSS is reported too, for information only: the fakes (recording what they were
   sent) live in it.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets as pysecrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cronsim import CronSim
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_calendar_sync import SlowGoogle  # noqa: E402
from benchmarks.bench_calendar_sync import seed as seed_google  # noqa: E402
from benchmarks.bench_github_webhooks import FIXTURE, prepare_gateway_db  # noqa: E402
from benchmarks.common import (  # noqa: E402
    Gateway,
    emit,
    free_port,
    fresh_database,
    open_fds,
    pg_counters,
    rss_mib,
)
from gateway.connectors.github.core import sign  # noqa: E402
from gateway.services import build_services  # noqa: E402
from gateway.settings import Settings  # noqa: E402

# -- 1. webhooks ------------------------------------------------------------------------------


async def soak_webhooks(args: argparse.Namespace) -> dict[str, Any]:
    secret = pysecrets.token_urlsafe(32)
    async with fresh_database("gw_bench_mem") as db:
        integration_id = await prepare_gateway_db(db.sa_url, db.key, secret)
        gateway = await Gateway(db).start()
        try:
            url = f"{gateway.url}/api/integrations/github/webhook?integration={integration_id}"
            template = json.loads(FIXTURE.read_text())
            counter = iter(range(1, 10**9))
            failures = 0
            sent = 0

            async def send_batch(total: int) -> None:
                nonlocal failures, sent
                shares = [total // args.concurrency + (i < total % args.concurrency)
                          for i in range(args.concurrency)]  # exactly `total` in all
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=args.concurrency)
                ) as session:

                    async def worker(count: int) -> None:
                        nonlocal failures, sent
                        for _ in range(count):
                            n = next(counter)
                            template["issue"]["number"] = n
                            template["issue"]["title"] = f"Soak issue {n}"
                            raw = json.dumps(template).encode()
                            headers = {
                                "Content-Type": "application/json",
                                "X-GitHub-Event": "issues",
                                "X-GitHub-Delivery": f"soak-{n}",
                                "X-Hub-Signature-256": sign(secret, raw),
                            }
                            async with session.post(url, data=raw, headers=headers) as r:
                                await r.read()
                                failures += r.status != 200
                                sent += 1

                    await asyncio.gather(*(worker(count) for count in shares))

            checkpoints: list[dict[str, Any]] = [
                {"webhooks": 0, "rss_mib": rss_mib(gateway.pid), "fds": open_fds(gateway.pid)}
            ]
            marks = sorted({1000, *(args.webhooks * k // 8 for k in range(1, 9))})
            started = time.perf_counter()
            for mark in marks:
                await send_batch(mark - sent)
                await asyncio.sleep(0.5)  # let in-flight work settle before reading memory
                checkpoints.append(
                    {"webhooks": sent, "rss_mib": rss_mib(gateway.pid),
                     "fds": open_fds(gateway.pid)}
                )
            elapsed = time.perf_counter() - started
        finally:
            gateway.stop()
    at_1k = next(c for c in checkpoints if c["webhooks"] == 1000)
    last = checkpoints[-1]
    half = min(checkpoints, key=lambda c: abs(c["webhooks"] - sent / 2))
    allowed = max(8.0, at_1k["rss_mib"] * 0.05)
    growth = round(last["rss_mib"] - at_1k["rss_mib"], 1)
    second_half = round(last["rss_mib"] - half["rss_mib"], 1)
    return {
        "webhooks": sent,
        "failures": failures,
        "seconds": round(elapsed, 1),
        "rate_per_s": round(sent / elapsed, 1),
        "rss_after_1000_mib": at_1k["rss_mib"],
        "rss_after_all_mib": last["rss_mib"],
        "growth_mib": growth,
        "growth_second_half_mib": second_half,
        "allowed_growth_mib": round(allowed, 1),
        "checkpoints": checkpoints,
        "met": failures == 0 and growth <= allowed and second_half <= 2.0,
    }


# -- 2. a compressed day of jobs ---------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def fake_slack_app(posts: list[dict[str, Any]]) -> web.Application:
    async def post_message(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.json_response({"ok": True, "channel": "C0SOAK0001", "ts": "1.1"})

    app = web.Application()
    app.router.add_post("/chat.postMessage", post_message)
    return app


async def seed_slack(engine: Any, secrets: Any, users: int) -> None:
    async with engine.begin() as conn:
        for i in range(users):
            uid = (
                await conn.execute(
                    text("INSERT INTO users (username, full_name, role, is_active, created_at, "
                         "updated_at) VALUES (:n, :f, 'user', true, now(), now()) RETURNING id"),
                    {"n": f"slack{i}", "f": f"Slack User {i}"},
                )
            ).scalar()
            config = {
                "bot_token": secrets.encrypt("xoxb-1234-5678-soaktoken"),
                "signing_secret": secrets.encrypt("8f742231b10e8888abcd99yyyzzz85a5"),
                "channel_id": "C0SOAK0001",
                "notify_on_start": True,
                "notify_on_stop": True,
                "daily_summary": True,
                # spread over the day, on and off the half hour
                "daily_summary_time": f"{(i * 7) % 24:02d}:{(i * 13) % 60:02d}",
                "linked_slack_user_id": f"U0SOAK{i:04d}",
                "enabled": True,
            }
            await conn.execute(
                text("INSERT INTO integrations (name, provider, user_id, is_global, is_active, "
                     "config, created_at, updated_at) VALUES ('Slack', 'slack_connector', :u, "
                     "false, true, CAST(:c AS jsonb), now(), now())"),
                {"u": uid, "c": json.dumps(config)},
            )


def fires_in(spec: str, start: datetime, end: datetime) -> list[datetime]:
    """The cron times of `spec` in [start, end)."""
    out = []
    for moment in CronSim(spec, start - timedelta(seconds=1)):
        if moment >= end:
            break
        out.append(moment)
    return out


async def compressed_day(args: argparse.Namespace) -> dict[str, Any]:
    google = SlowGoogle(0.0)
    posts: list[dict[str, Any]] = []
    runners = []
    urls = []
    for app in (google.app(), await fake_slack_app(posts)):
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{port}")
    google_url, slack_url = urls
    day_start = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    clock = Clock(day_start)
    samples: list[dict[str, Any]] = []
    runs: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    try:
        async with fresh_database("gw_bench_day") as db:
            with tempfile.TemporaryDirectory() as data_dir:
                settings = Settings(
                    database_url=db.sa_url,
                    encryption_key=db.key,
                    data_dir=Path(data_dir),
                    scheduler=False,
                    auto_migrate=False,
                    google_client_id="123-bench.apps.googleusercontent.com",
                    google_client_secret="GOCSPX-bench",
                    google_token_url=google_url + "/token",
                    google_calendar_api_url=google_url + "/calendar/v3",
                    google_userinfo_url=google_url + "/userinfo",
                    google_revoke_url=google_url + "/revoke",
                    google_auth_url=google_url + "/auth",
                    slack_api_url=slack_url,
                )
                services = build_services(settings, clock=clock)
                engine = db.engine()
                await seed_google(engine, services.secrets, args.google_users,
                                  fail_every=args.google_users)  # the last one fails
                await seed_slack(engine, services.secrets, args.slack_users)
                await engine.dispose()
                scheduler = services.scheduler
                async with services.running(dispatch_events=True):
                    started = time.perf_counter()
                    for slot in range(args.slots * args.days):
                        begin = day_start + timedelta(minutes=30 * slot)
                        end = begin + timedelta(minutes=30)
                        due = sorted(
                            (moment, name)
                            for name, job in scheduler.jobs.items()
                            for moment in fires_in(job.spec, begin, end)
                        )
                        for moment, name in due:
                            clock.now = moment + timedelta(seconds=2)  # a tick fires late
                            report = await scheduler.run(name, slot=moment)
                            runs[name] = runs.get(name, 0) + 1
                            key = f"{name}:{report.outcome}"
                            outcomes[key] = outcomes.get(key, 0) + 1
                        clock.now = end - timedelta(seconds=1)
                        await asyncio.sleep(0.05)  # callbacks scheduled by the runs finish
                        pg = await pg_counters(db.dsn)
                        pool = services.db.engine.pool
                        samples.append({
                            "slot": slot,
                            "day": slot // args.slots + 1,
                            "tasks": len(asyncio.all_tasks()),
                            "fds": open_fds(),
                            "pg_connections": pg["backends"],
                            "pool_checked_out": pool.checkedout(),
                            "rss_mib": rss_mib(),
                        })
                    elapsed = time.perf_counter() - started
    finally:
        for runner in runners:
            await runner.cleanup()

    keys = ("tasks", "fds", "pg_connections")
    per_day = {
        day: {k: max(x[k] for x in samples if x["day"] == day) for k in keys}
        for day in range(1, args.days + 1)
    }
    first = per_day[1]
    later = {k: max(per_day[d][k] for d in per_day if d > 1) for k in keys} if args.days > 1 \
        else first
    growth = {k: later[k] - first[k] for k in keys}
    checked_out = max(x["pool_checked_out"] for x in samples)
    return {
        "days": args.days,
        "slots": len(samples),
        "hours": len(samples) / 2,
        "seconds": round(elapsed, 1),
        "google_users": args.google_users,
        "slack_users": args.slack_users,
        "job_runs": runs,
        "outcomes": outcomes,
        "slack_posts": len(posts),
        "google_calls": google.calls,
        "max_per_day": per_day,
        "growth": growth,
        "pool_size": services.db.pool_size,
        "max_pool_checked_out_between_slots": checked_out,
        "rss_first_mib": samples[0]["rss_mib"],
        "rss_end_of_day_mib": [
            next(x["rss_mib"] for x in reversed(samples) if x["day"] == d) for d in per_day
        ],
        "samples": samples,
        "met": all(v <= 0 for v in growth.values()) and checked_out == 0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "memory"}
    met = True
    if args.only in (None, "webhooks"):
        report["webhooks"] = await soak_webhooks(args)
        met = met and report["webhooks"]["met"]
    if args.only in (None, "day"):
        report["compressed_day"] = await compressed_day(args)
        met = met and report["compressed_day"]["met"]
    return {
        **report,
        "targets": {
            "webhook_rss_growth": "<= max(8 MiB, 5% of RSS after 1,000); last half <= 2 MiB",
            "compressed_day": "no later day needs more tasks, fds, connections than the first; "
            "none checked out between slots",
        },
        "met": met,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="10,000 webhooks instead of 30,000; 6 + 6 users in the days")
    parser.add_argument("--webhooks", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--slots", type=int, default=48, help="half-hour slots a day")
    parser.add_argument("--days", type=int, default=2, help="compressed days (the first warms up)")
    parser.add_argument("--google-users", type=int, default=10)
    parser.add_argument("--slack-users", type=int, default=10)
    parser.add_argument("--only", choices=["webhooks", "day"], help="one part only")
    args = parser.parse_args(argv)
    args.webhooks = args.webhooks or (10_000 if args.quick else 30_000)
    if args.quick:
        args.google_users, args.slack_users = min(args.google_users, 6), min(args.slack_users, 6)
    return args


def main(argv: list[str] | None = None) -> int:
    emit(asyncio.run(run(parse(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
