"""Slack connector: `/tt status` throughput, timer latency while Slack hangs, outbox latency.

Usage: python benchmarks/bench_slack.py [--requests 1500] [--concurrency 50] [--quick]

One fresh PostgreSQL database, one real gateway process (`python -m gateway`, scheduler off)
whose SLACK_API_URL points at a fake Slack Web API served by this process, and the bare
baseline of benchmarks/baseline_server.py. Three measurements, each a ratio or a bound taken
in the same run:

(a) signed `/tt status` slash commands at 50 concurrent senders: gateway against a bare aiohttp
    handler that checks the same Slack signature and runs one SELECT (targets: throughput ratio
    >= 0.5, gateway p99 < 100 ms);
(b) POST /api/timer/start (then /stop) from several users at once, in alternating blocks while
    the fake Slack answers at once and while it never answers (targets: p50 and p99 while it
    hangs within 10% of the healthy ones);
(c) a row INSERTed straight into time_entries (as TimeTracker does) until its chat.postMessage
    reaches the fake Slack (target: p99 < 1 s).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    REPO,
    Gateway,
    cpu_seconds,
    emit,
    free_port,
    fresh_database,
    latency_summary,
    make_project,
    make_token,
    make_user,
    per_request,
    pg_counters,
    stop_process,
    wait_ready,
)
from gateway.connectors.slack.core import sign  # noqa: E402

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-1234-5678-benchtoken"
CHANNEL = "C0BENCH001"
TEAM = "T0BENCH01"
EVENTS = "/api/integrations/slack/events"


class FakeSlack:
    """chat.postMessage and auth.test; in `hang` mode a call is never answered."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.posts: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Condition()
        self.hung = 0
        self._never: asyncio.Future[None] | None = None

    def set_mode(self, mode: str) -> None:
        """`ok` or `hang`. Back to `ok`, the calls left hanging are answered (Slack recovered),
        so a healthy block is not still waiting out a hanging block's call."""
        self.mode = mode
        if mode == "ok" and self._never is not None and not self._never.done():
            self._never.set_result(None)
            self._never = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/chat.postMessage", self.post_message)
        app.router.add_post("/auth.test", self.auth_test)
        return app

    async def auth_test(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "user": "bench", "team_id": TEAM, "user_id": "UB"})

    async def post_message(self, request: web.Request) -> web.Response:
        if self.mode == "hang":
            self.hung += 1
            if self._never is None:
                self._never = asyncio.get_running_loop().create_future()
            await self._never  # cancelled when the gateway gives up or the server stops
        body = await request.json()
        now = time.perf_counter()
        async with self.arrived:
            self.posts.append((now, body))
            self.arrived.notify_all()
        return web.json_response({"ok": True, "channel": body.get("channel"), "ts": "1.1"})

    async def nth_post(self, marker: str, n: int, seconds: float) -> float | None:
        """Arrival time of the n-th post whose text carries `marker`, or None."""
        async def found() -> float:
            async with self.arrived:
                while True:
                    times = [at for at, b in self.posts if marker in b.get("text", "")]
                    if len(times) >= n:
                        return times[n - 1]
                    await self.arrived.wait()

        try:
            return await asyncio.wait_for(found(), seconds)
        except TimeoutError:
            return None

    async def wait_for(self, predicate: Any, seconds: float) -> float | None:
        """Arrival time (perf_counter) of the first post matching `predicate`, or None."""
        async def found() -> float:
            async with self.arrived:
                while True:
                    for at, body in self.posts:
                        if predicate(body):
                            return at
                    await self.arrived.wait()

        try:
            return await asyncio.wait_for(found(), seconds)
        except TimeoutError:
            return None


def started_entry(body: dict[str, Any]) -> str | None:
    try:
        return str(body["blocks"][1]["elements"][0]["value"])
    except (KeyError, IndexError, TypeError):
        return None


def command_body(slack_user: str, verb: str) -> bytes:
    return urlencode(
        {
            "token": "ignored",
            "team_id": TEAM,
            "channel_id": "C2147483705",
            "user_id": slack_user,
            "user_name": "bench",
            "command": "/tt",
            "text": verb,
            "trigger_id": f"{uuid.uuid4().int}.1.abc",
        }
    ).encode()


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sign(SIGNING_SECRET, ts, body),
    }


# -- (a) /tt status --------------------------------------------------------------------------


async def status_load(url: str, slack_user: str, total: int, concurrency: int, warmup: int,
                      expect: str, dsn: str, pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(count: int, record: bool) -> None:
            nonlocal failures
            for _ in range(count):
                body = command_body(slack_user, "status")
                started = time.perf_counter()
                async with session.post(url, data=body, headers=signed(body)) as r:
                    text = await r.text()
                    ok = r.status == 200 and expect in text
                if record:
                    latencies.append(time.perf_counter() - started)
                    failures += 0 if ok else 1

        await asyncio.gather(*(worker(max(warmup // concurrency, 1), False)
                               for _ in range(concurrency)))
        counters = await pg_counters(dsn)
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(total // concurrency, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu
        # Sessions include any the pool opened; transactions count each BEGIN…COMMIT/ROLLBACK
        # and each autocommit statement of every process on this database.
        pg = per_request(counters, await pg_counters(dsn), len(latencies))
    return {
        "requests": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        **latency_summary(latencies),
        "server_cpu_ms_per_request": round(cpu * 1000 / max(len(latencies), 1), 2),
        **pg,
    }


# -- (b) timer latency while Slack hangs -----------------------------------------------------


async def timer_block(base: str, tokens: list[str], project_id: int, per_user: int
                      ) -> tuple[list[float], list[float], int]:
    starts: list[float] = []
    stops: list[float] = []
    failures = 0
    async with aiohttp.ClientSession() as session:

        async def user(token: str) -> None:
            nonlocal failures
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(per_user):
                t0 = time.perf_counter()
                async with session.post(f"{base}/api/timer/start", json={"project_id": project_id},
                                        headers=headers) as r:
                    await r.read()
                    failures += r.status != 201
                t1 = time.perf_counter()
                async with session.post(f"{base}/api/timer/stop", headers=headers) as r:
                    await r.read()
                    failures += r.status != 200
                starts.append(t1 - t0)
                stops.append(time.perf_counter() - t1)

        await asyncio.gather(*(user(t) for t in tokens))
    return starts, stops, failures


async def timer_latency(fake: FakeSlack, base: str, tokens: list[str], project_id: int,
                        rounds: int, per_user: int) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {
        "healthy": {"start": [], "stop": []},
        "hanging": {"start": [], "stop": []},
    }
    failures = 0
    await timer_block(base, tokens, project_id, 3)  # warm-up
    for _ in range(rounds):
        for mode in ("healthy", "hanging"):
            fake.set_mode("ok" if mode == "healthy" else "hang")
            starts, stops, failed = await timer_block(base, tokens, project_id, per_user)
            samples[mode]["start"] += starts
            samples[mode]["stop"] += stops
            failures += failed
    fake.set_mode("ok")
    healthy = latency_summary(samples["healthy"]["start"])
    hanging = latency_summary(samples["hanging"]["start"])
    ratios = {
        "p50": round(hanging["p50_ms"] / healthy["p50_ms"], 3) if healthy["p50_ms"] else 0.0,
        "p99": round(hanging["p99_ms"] / healthy["p99_ms"], 3) if healthy["p99_ms"] else 0.0,
    }
    return {
        "users": len(tokens),
        "rounds": rounds,
        "starts_per_user_per_block": per_user,
        "failures": failures,
        "start_healthy": healthy,
        "start_hanging": hanging,
        "stop_healthy": latency_summary(samples["healthy"]["stop"]),
        "stop_hanging": latency_summary(samples["hanging"]["stop"]),
        "slack_calls_left_hanging": fake.hung,
        "ratio_hanging_over_healthy": ratios,
    }


# -- (c) time_entries INSERT to chat.postMessage ---------------------------------------------


async def end_to_end(fake: FakeSlack, dsn: str, user_id: int, project_id: int, count: int
                     ) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    latencies: list[float] = []
    stop_latencies: list[float] = []
    lost = 0
    try:
        for _ in range(count):
            stopped_before = sum(1 for _, b in fake.posts if "stopped a timer" in b.get("text", ""))
            t0 = time.perf_counter()
            entry_id = await conn.fetchval(
                "INSERT INTO time_entries (user_id, project_id, start_time, source, billable, "
                "paid, break_seconds, created_at, updated_at) VALUES ($1, $2, "
                "(now() at time zone 'utc'), 'manual', true, false, 0, "
                "(now() at time zone 'utc'), (now() at time zone 'utc')) RETURNING id",
                user_id, project_id,
            )
            at = await fake.wait_for(lambda b, e=str(entry_id): started_entry(b) == e, 10)
            if at is None:
                lost += 1
            else:
                latencies.append(at - t0)
            t1 = time.perf_counter()
            await conn.execute(
                "UPDATE time_entries SET end_time = (now() at time zone 'utc'), "
                "duration_seconds = 1, updated_at = (now() at time zone 'utc') WHERE id = $1",
                entry_id,
            )
            at = await fake.nth_post("stopped a timer", stopped_before + 1, 10)
            if at is None:
                lost += 1
            else:
                stop_latencies.append(at - t1)
    finally:
        await conn.close()
    return {
        "inserts": count,
        "lost": lost,
        "insert_to_post": latency_summary(latencies),
        "update_end_time_to_post": latency_summary(stop_latencies),
    }


# -- the run ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeSlack()
    runner = web.AppRunner(fake.app(), shutdown_timeout=1)
    await runner.setup()
    fake_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", fake_port).start()
    fake_url = f"http://127.0.0.1:{fake_port}"
    procs: list[subprocess.Popen[bytes]] = []
    gateway: Gateway | None = None
    try:
        async with fresh_database("gw_bench_slack") as db:
            engine = db.engine()
            async with engine.begin() as conn:
                project_id = await make_project(conn, "Website Redesign")
                people = []
                for i in range(args.timer_users + 2):  # status user, e2e user, timer users
                    uid = await make_user(conn, f"bench{i}", f"Bench User {i}")
                    people.append((uid, await make_token(conn, uid), f"U0BENCH{i:04d}"))
            await engine.dispose()
            gateway = await Gateway(
                db, env={"SLACK_API_URL": fake_url}, log=args.gateway_log, profile=args.profile
            ).start()
            async with aiohttp.ClientSession() as session:
                for _uid, token, slack_user in people:
                    async with session.post(
                        f"{gateway.url}/api/integrations/slack/config",
                        json={"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET,
                              "channel_id": CHANNEL, "linked_slack_user_id": slack_user},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as r:
                        assert r.status == 200, await r.text()
                # The status user has a running timer, so /tt status has something to say.
                status_uid, status_token, status_slack = people[0]
                async with session.post(
                    f"{gateway.url}/api/timer/start", json={"project_id": project_id},
                    headers={"Authorization": f"Bearer {status_token}"},
                ) as r:
                    assert r.status == 201, await r.text()
            base_port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, str(REPO / "benchmarks" / "baseline_server.py"),
                 "--port", str(base_port), "--dsn", db.dsn, "--secret", "unused",
                 "--slack-secret", SIGNING_SECRET, "--slack-user", str(status_uid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            await wait_ready(f"http://127.0.0.1:{base_port}{EVENTS}")

            results: dict[str, Any] = {}
            if args.only in (None, "status"):
                results["status"] = await status_load(
                    f"http://127.0.0.1:{base_port}{EVENTS}", status_slack, args.requests,
                    args.concurrency, args.warmup, "Running", db.dsn, procs[0].pid,
                ), await status_load(
                    f"{gateway.url}{EVENTS}", status_slack, args.requests, args.concurrency,
                    args.warmup, "Running on", db.dsn, gateway.pid,
                )
            if args.only in (None, "e2e"):
                results["e2e"] = await end_to_end(fake, db.dsn, people[1][0], project_id, args.e2e)
            if args.only in (None, "timer"):
                results["timer"] = await timer_latency(
                    fake, gateway.url, [p[1] for p in people[2:]], project_id, args.rounds,
                    args.per_user,
                )
            gateway.stop()
            stop_process(procs[0])
    finally:
        if gateway is not None:
            gateway.stop()
        for p in procs:
            stop_process(p)
        await runner.cleanup()

    report: dict[str, Any] = {"benchmark": "slack"}
    met = True
    if "status" in results:
        baseline, gw = results["status"]
        ratio = gw["rps"] / baseline["rps"] if baseline["rps"] else 0.0
        met_a = ratio >= 0.5 and gw["p99_ms"] < 100 and gw["failures"] == 0
        report["status_command"] = {
            "concurrency": args.concurrency,
            "integrations": len(people),
            "baseline": baseline,
            "gateway": gw,
            "throughput_ratio": round(ratio, 3),
            "targets": {"ratio_at_least": 0.5, "gateway_p99_ms_below": 100},
            "met": met_a,
        }
        met = met and met_a
    if "timer" in results:
        timers = results["timer"]
        r = timers["ratio_hanging_over_healthy"]
        met_b = r["p50"] <= 1.10 and r["p99"] <= 1.10 and timers["failures"] == 0
        report["timer_while_slack_hangs"] = {
            **timers,
            "targets": {"p50_and_p99_ratio_at_most": 1.10},
            "met": met_b,
        }
        met = met and met_b
    if "e2e" in results:
        e2e = results["e2e"]
        met_c = e2e["lost"] == 0 and e2e["insert_to_post"]["p99_ms"] < 1000
        report["insert_to_post"] = {**e2e, "targets": {"p99_ms_below": 1000}, "met": met_c}
        met = met and met_c
    report["met"] = met
    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--timer-users", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=None, help="healthy/hanging block pairs")
    parser.add_argument("--per-user", type=int, default=None, help="starts per user per block")
    parser.add_argument("--e2e", type=int, default=None, help="rows inserted for (c)")
    parser.add_argument("--gateway-log", metavar="FILE")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the gateway into FILE")
    parser.add_argument("--only", choices=["status", "timer", "e2e"], help="one part only")
    args = parser.parse_args(argv)
    q = args.quick
    args.requests = args.requests or (1000 if q else 1500)
    args.warmup = args.warmup or (200 if q else 300)
    args.rounds = args.rounds or (3 if q else 5)
    args.per_user = args.per_user or (10 if q else 15)
    args.e2e = args.e2e or (30 if q else 100)
    return args


def main(argv: list[str] | None = None) -> int:
    report = asyncio.run(run(parse(argv)))
    emit(report)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
