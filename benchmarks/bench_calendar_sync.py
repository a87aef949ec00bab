"""Google Calendar: the scheduled sync of many users at once against the same work one by one.

Usage: python benchmarks/bench_calendar_sync.py [--users 500] [--delay 0.1] [--quick]

A fresh PostgreSQL database with --users connected Google Calendar users (one project, tokens
encrypted as the OAuth callback stores them) and a local fake Google (a process of its own, as
Google is remote in production) that sleeps --delay
seconds before every answer (token refresh, events.list). Every 20th user (5%) has an expired
access token whose refresh Google answers `invalid_grant`.

The gateway's services are built as `run-job` builds them (`build_services`, clock injected at
2026-11-27 10:00 UTC, after the recorded events), then:

1. the scheduled job, `Scheduler.run("google_calendar_sync")`, at GATEWAY_SYNC_CONCURRENCY
   (default 10): every eligible user's import, each in its own task and sessions;
2. the database and the integrations are put back as they were (entries, links, configs);
3. the same job's work with a runner of concurrency 1, one user after the other, over the
   first --sequential-users integrations (default 100, 5 of them failing; --sequential-users
   500 runs them all, about two minutes here): one user at a time is linear in the number of
   users by construction, so its duration is scaled to all users (reported as measured and
   scaled).

Reported: both durations and the speed-up (target >= 8x), the process's RSS before, during
(peak, sampled every 50 ms) and after each run (target: the concurrent run's growth no more
than the sequential run's + 32 MiB), and per-user results: each healthy user's four entries in
both runs, every failing user marked reconnect_required with no entries, identical per-user
counts in both runs. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    REPO,
    emit,
    free_port,
    fresh_database,
    own_cpu_seconds,
    postgres_cpu_seconds,
    rss_mib,
    stop_process,
    wait_ready,
)
from gateway.connectors.google import core  # noqa: E402
from gateway.connectors.google.service import JOB  # noqa: E402
from gateway.connectors.jobs import IntegrationJobRunner  # noqa: E402
from gateway.services import build_services  # noqa: E402
from gateway.settings import Settings  # noqa: E402

GOOGLE = REPO / "tests" / "fixtures" / "google"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
PROVIDER = "google_calendar_connector"
EXPECTED_ENTRIES = 4  # of the recorded events: 4 imported, 3 skipped (all-day, [TT], declined)


def fixture(name: str) -> Any:
    return json.loads((GOOGLE / f"{name}.json").read_text())


class SlowGoogle:
    """Token refresh and events.list, each answered after `delay` seconds.

    Served by a process of its own (`--serve-fake-google PORT`): Google's side of a call costs
    the gateway nothing in production, so here it must not share the job's event loop and
    CPU either. `GET /stats` says how many calls it answered.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
        page = fixture("events.list.page1")
        page["items"] = page["items"] + fixture("events.list.page2")["items"]
        page.pop("nextPageToken", None)
        self.page = page
        self.tokens = itertools.count()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_get("/calendar/v3/calendars/{cal}/events", self.events)
        app.router.add_get("/stats", self.stats)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self.calls})

    async def token(self, request: web.Request) -> web.Response:
        self.calls += 1
        form = await request.post()
        await asyncio.sleep(self.delay)
        refresh = str(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or refresh.startswith("bad-"):
            return web.json_response(fixture("token.invalid_grant"), status=400)
        token = f"ya29.refreshed-{next(self.tokens)}"
        answer = fixture("token.refresh")
        answer["access_token"] = token
        return web.json_response(answer)

    async def events(self, request: web.Request) -> web.Response:
        self.calls += 1
        await asyncio.sleep(self.delay)
        # Valid: the seeded access tokens (the failing users' have expired, so the gateway
        # never sends them) and those this fake issued.
        auth = request.headers.get("Authorization", "")
        if not auth[7:].startswith(("ya29.user-", "ya29.refreshed-")):
            return web.json_response(fixture("error.401"), status=401)
        return web.json_response(self.page)


class RssSampler:
    """The peak RSS of this process while a block runs (sampled every 50 ms)."""

    def __init__(self) -> None:
        self.before = self.peak = self.after = 0.0
        self.cpu = self.pg_cpu = 0.0

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[RssSampler]:
        self.before = self.peak = rss_mib()
        cpu, pg_cpu = own_cpu_seconds(), postgres_cpu_seconds()

        async def sample() -> None:
            while True:
                self.peak = max(self.peak, rss_mib())
                await asyncio.sleep(0.05)

        task = asyncio.create_task(sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.after = rss_mib()
            self.peak = max(self.peak, self.after)
            self.cpu = own_cpu_seconds() - cpu  # this process only: the fake Google has its own
            self.pg_cpu = postgres_cpu_seconds() - pg_cpu

    def as_dict(self, users: int) -> dict[str, float]:
        return {
            "cpu_ms_per_user_gateway": round(self.cpu * 1000 / max(users, 1), 1),
            "cpu_ms_per_user_postgres": round(self.pg_cpu * 1000 / max(users, 1), 1),
            "rss_before_mib": self.before,
            "rss_peak_mib": self.peak,
            "rss_after_mib": self.after,
            "growth_mib": round(self.peak - self.before, 1),
        }


async def seed(
    engine: Any, secrets: Any, users: int, fail_every: int = 20
) -> tuple[dict[int, str], set[int]]:
    """Users, one project and their integrations; (integration id -> config JSON, failing ids).

    Every `fail_every`-th user's refresh token is refused with invalid_grant (5% by default).
    """
    configs: dict[int, str] = {}
    failing: set[int] = set()
    async with engine.begin() as conn:
        project_id = (
            await conn.execute(
                text("INSERT INTO projects (name, status, billable) VALUES ('Calendar', "
                     "'active', true) RETURNING id")
            )
        ).scalar()
        await conn.execute(text("INSERT INTO settings (timezone, rounding_minutes) "
                                "VALUES ('Europe/Rome', 1)"))
        user_ids = (
            await conn.execute(
                text("INSERT INTO users (username, role, is_active, created_at, updated_at) "
                     "SELECT 'cal' || g, 'user', true, now(), now() "
                     "FROM generate_series(1, :n) g RETURNING id"),
                {"n": users},
            )
        ).scalars().all()
        rows = []
        for i, uid in enumerate(sorted(user_ids)):
            bad = i % fail_every == fail_every - 1
            expiry = NOW - timedelta(hours=1) if bad else NOW + timedelta(hours=1)
            config = {
                "access_token": secrets.encrypt(f"ya29.user-{i}"),
                "refresh_token": secrets.encrypt(f"{'bad' if bad else 'good'}-refresh-{i}"),
                "token_expiry": core.format_token_expiry(expiry),
                "email": f"cal{i}@example.com",
                "calendar_id": "primary",
                "default_project_id": project_id,
                "sync_direction": "import",
                "sync_days_back": 7,
                "connected_at": (NOW - timedelta(days=30)).isoformat(),
                "enabled": True,
            }
            rows.append({"u": uid, "c": json.dumps(config), "bad": bad})
        for row in rows:
            iid = (
                await conn.execute(
                    text("INSERT INTO integrations (name, provider, user_id, is_global, "
                         "is_active, config, created_at, updated_at) VALUES ('Google Calendar', "
                         ":p, :u, false, true, CAST(:c AS jsonb), now(), now()) RETURNING id"),
                    {"p": PROVIDER, "u": row["u"], "c": row["c"]},
                )
            ).scalar()
            configs[int(iid)] = row["c"]
            if row["bad"]:
                failing.add(int(iid))
    return configs, failing


async def reset(engine: Any, configs: dict[int, str]) -> None:
    """Back to the state before the first run: no entries, no links, the seeded configs."""
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM gateway_calendar_links"))
        await conn.execute(text("DELETE FROM time_entries"))
        await conn.execute(
            text("UPDATE integrations SET config = CAST(:c AS jsonb), last_sync_at = NULL, "
                 "last_sync_status = NULL, last_error = NULL WHERE id = :i"),
            [{"i": i, "c": c} for i, c in configs.items()],
        )


async def results(engine: Any) -> dict[int, dict[str, Any]]:
    """Per integration: entries imported for its user, reconnect flag, last sync status."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT i.id, i.config->>'reconnect_required' = 'true', i.last_sync_status, "
                     "(SELECT count(*) FROM time_entries t WHERE t.user_id = i.user_id) "
                     "FROM integrations i WHERE i.provider = :p"),
                {"p": PROVIDER},
            )
        ).all()
    return {
        int(r[0]): {"reconnect": bool(r[1]), "status": r[2], "entries": int(r[3])} for r in rows
    }


def check(per_user: dict[int, dict[str, Any]], failing: set[int]) -> dict[str, Any]:
    healthy_ok = sum(
        1 for i, r in per_user.items()
        if i not in failing and r["entries"] == EXPECTED_ENTRIES and r["status"] == "success"
    )
    failing_ok = sum(
        1 for i, r in per_user.items()
        if i in failing and r["entries"] == 0 and r["reconnect"] and r["status"] == "error"
    )
    return {
        "healthy_users": len(per_user) - len(failing),
        "healthy_users_with_all_entries": healthy_ok,
        "failing_users": len(failing),
        "failing_users_marked_reconnect": failing_ok,
        "entries": sum(r["entries"] for r in per_user.values()),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake-google", str(port), "--delay", str(args.delay)]
    )
    base = f"http://127.0.0.1:{port}"
    client = aiohttp.ClientSession()

    async def google_calls() -> int:
        async with client.get(base + "/stats") as r:
            return int((await r.json())["calls"])

    try:
        await wait_ready(base + "/stats")
        async with fresh_database("gw_bench_gcal") as db:
            with tempfile.TemporaryDirectory() as data_dir:
                settings = Settings(
                    database_url=db.sa_url,
                    encryption_key=db.key,
                    data_dir=Path(data_dir),
                    scheduler=False,
                    auto_migrate=False,
                    sync_concurrency=args.concurrency,
                    google_client_id="123-bench.apps.googleusercontent.com",
                    google_client_secret="GOCSPX-bench",
                    google_token_url=base + "/token",
                    google_calendar_api_url=base + "/calendar/v3",
                    google_userinfo_url=base + "/userinfo",
                    google_revoke_url=base + "/revoke",
                    google_auth_url=base + "/auth",
                )
                services = build_services(settings, clock=lambda: NOW)
                engine = db.engine()
                configs, failing = await seed(engine, services.secrets, args.users)
                connector = services.connectors["google"]
                async with services.running(dispatch_events=False):
                    concurrent_rss = RssSampler()
                    calls = await google_calls()
                    async with concurrent_rss.watch():
                        started = time.perf_counter()
                        report = await services.scheduler.run(JOB)
                        concurrent_s = time.perf_counter() - started
                    concurrent_calls = await google_calls() - calls
                    first = await results(engine)
                    await reset(engine, configs)
                    sequential_rss = RssSampler()
                    calls = await google_calls()
                    one_by_one = IntegrationJobRunner(1)
                    subset = set(sorted(configs)[: args.sequential_users])

                    def eligible(row: Any) -> bool:
                        return row.id in subset and connector.eligible(row)

                    async with sequential_rss.watch():
                        started = time.perf_counter()
                        seq_report = await one_by_one.run_all(
                            JOB, connector, connector.sync_work, eligible=eligible
                        )
                        sequential_s = time.perf_counter() - started
                    sequential_calls = await google_calls() - calls
                    second = {i: r for i, r in (await results(engine)).items() if i in subset}
                await engine.dispose()
    finally:
        await client.close()
        stop_process(fake)

    scaled_s = sequential_s * args.users / len(subset)
    speedup = scaled_s / concurrent_s if concurrent_s else 0.0
    first_check = check(first, failing)
    second_check = check(second, failing & subset)
    same = {i: (r["entries"], r["reconnect"]) for i, r in first.items() if i in subset} == {
        i: (r["entries"], r["reconnect"]) for i, r in second.items()
    }
    isolated = (
        first_check["healthy_users_with_all_entries"] == first_check["healthy_users"]
        and first_check["failing_users_marked_reconnect"] == len(failing)
        and second_check["healthy_users_with_all_entries"] == second_check["healthy_users"]
        and second_check["failing_users_marked_reconnect"] == len(failing & subset)
        and report.succeeded == args.users - len(failing) and report.failed == len(failing)
        and same
    )
    flat = concurrent_rss.peak - concurrent_rss.before <= (
        sequential_rss.peak - sequential_rss.before
    ) + 32
    return {
        "benchmark": "calendar_sync",
        "users": args.users,
        "failing_users": len(failing),
        "google_delay_ms": round(args.delay * 1000),
        "concurrency": args.concurrency,
        "concurrent": {
            "seconds": round(concurrent_s, 2),
            "google_calls": concurrent_calls,
            "job_outcome": report.outcome,
            "succeeded": report.succeeded,
            "failed": report.failed,
            **concurrent_rss.as_dict(args.users),
            **first_check,
        },
        "one_at_a_time": {
            "users": len(subset),
            "seconds": round(sequential_s, 2),
            "seconds_scaled_to_all_users": round(scaled_s, 2),
            "google_calls": sequential_calls,
            "job_outcome": seq_report.outcome,
            "succeeded": seq_report.succeeded,
            "failed": seq_report.failed,
            **sequential_rss.as_dict(len(subset)),
            **second_check,
        },
        "speedup": round(speedup, 2),
        "same_per_user_results": same,
        "peak_rss_mib": max(concurrent_rss.peak, sequential_rss.peak),
        "targets": {
            "speedup_at_least": 8,
            "concurrent_rss_growth_at_most_sequential_plus_mib": 32,
            "failures_isolated": True,
        },
        "met": speedup >= 8 and flat and isolated,
        "met_detail": {"speedup": speedup >= 8, "memory_flat": flat, "isolated": isolated},
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="200 users (40 one at a time) instead of 500 (100)")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds added to every call")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="GATEWAY_SYNC_CONCURRENCY (default 10, the gateway's default)")
    parser.add_argument("--sequential-users", type=int, default=None,
                        help="users synced one at a time for the baseline (default 100)")
    parser.add_argument("--serve-fake-google", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.users = args.users or (200 if args.quick else 500)
    args.sequential_users = min(args.sequential_users or (40 if args.quick else 100), args.users)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.serve_fake_google:
        web.run_app(SlowGoogle(args.delay).app(), host="127.0.0.1", port=args.serve_fake_google,
                    print=None, access_log=None)
        return 0
    emit(asyncio.run(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
