"""Signed GitHub `issues` deliveries per second: the gateway against a bare baseline, same run.

Usage: python benchmarks/bench_github_webhooks.py [--requests 3000] [--concurrency 32] [--quick]
Needs PostgreSQL (BENCH_DATABASE_URL, default postgresql+asyncpg://postgres@127.0.0.1:5432/postgres);
a fresh database is created and dropped. Both servers run as separate processes on loopback; the
load generator runs here. Reports throughput, p50/p99 latency and the ratio gateway/baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import free_port, wait_ready  # noqa: E402
from gateway.connectors.github.core import sign  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "github" / "webhooks" / "issues.opened.json"


TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cpu_snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server, of all PostgreSQL processes and of this load generator."""
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    postgres += _cpu_of(int(entry.name))
            except OSError:
                continue
    own = os.times()
    return {"server": _cpu_of(server_pid), "postgres": postgres, "client": own.user + own.system}


async def prepare_gateway_db(url: str, key: str, secret: str) -> int:
    """Migrate, then make a user, a project and an active GitHub integration; returns its id."""
    from gateway.crypto import SecretBox
    from gateway.db.migrate import upgrade

    engine = create_async_engine(url)
    await upgrade(engine)
    box = SecretBox(key)
    async with engine.begin() as conn:
        uid = (
            await conn.execute(
                text("INSERT INTO users (username, role, is_active, created_at, updated_at) "
                     "VALUES ('bench', 'admin', true, now(), now()) RETURNING id")
            )
        ).scalar()
        pid = (
            await conn.execute(
                text("INSERT INTO projects (name, status, billable) VALUES ('Bench', 'active', true) RETURNING id")
            )
        ).scalar()
        config = {
            "repo_owner": "Codertocat",
            "repo_name": "Hello-World",
            "default_project_id": pid,
            "auto_start_timer": False,
            "webhook_secret": box.encrypt(secret),
        }
        iid = (
            await conn.execute(
                text("INSERT INTO integrations (name, provider, user_id, is_global, is_active, config, "
                     "created_at, updated_at) VALUES ('GitHub', 'github_connector', :u, false, true, "
                     "CAST(:c AS jsonb), now(), now()) RETURNING id"),
                {"u": uid, "c": json.dumps(config)},
            )
        ).scalar()
    await engine.dispose()
    return int(iid)


async def load(
    url: str, secret: str, total: int, concurrency: int, warmup: int, server_pid: int
) -> dict[str, float]:
    template = json.loads(FIXTURE.read_text())
    counter = iter(range(1, 10**9))

    def request_body() -> tuple[bytes, dict[str, str]]:
        n = next(counter)
        template["issue"]["number"] = n
        template["issue"]["title"] = f"Benchmark issue {n}"
        raw = json.dumps(template).encode()
        return raw, {
            "Content-Type": "application/json",
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, raw),
        }

    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(record: bool) -> None:
            nonlocal failures
            raw, headers = request_body()
            started = time.perf_counter()
            async with session.post(url, data=raw, headers=headers) as r:
                await r.read()
                ok = r.status == 200
            if record:
                latencies.append(time.perf_counter() - started)
                failures += 0 if ok else 1

        async def worker(count: int, record: bool) -> None:
            for _ in range(count):
                await send(record)

        await asyncio.gather(*(worker(warmup // concurrency, False) for _ in range(concurrency)))
        per_worker = total // concurrency
        cpu_before = cpu_snapshot(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(per_worker, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_snapshot(server_pid)
    latencies.sort()
    # CPU per request (ms) of each party: all share the machine's cores, so this is the budget.
    cpu = {
        f"cpu_ms_{k}": round((cpu_after[k] - cpu_before[k]) * 1000 / max(len(latencies), 1), 3)
        for k in cpu_after
    }
    return {
        "requests": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        **cpu,
    }


async def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=320)
    parser.add_argument(
        "--profile", metavar="FILE", help="record the gateway with py-spy (collapsed stacks) into FILE"
    )
    parser.add_argument("--gateway-log", metavar="FILE", help="write the gateway's stderr to FILE")
    parser.add_argument("--quick", action="store_true", help="1,000 requests, 96 warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup = min(args.requests, 1000), min(args.warmup, 96)

    base_url = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    name = f"gw_bench_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base_url).set(database=name)
    sa_url = url.render_as_string(hide_password=False)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    key = Fernet.generate_key().decode()
    secret = secrets.token_urlsafe(32)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        integration_id = await prepare_gateway_db(sa_url, key, secret)
        gw_port, base_port = free_port(), free_port()
        env = {
            **os.environ,
            "DATABASE_URL": sa_url,
            "GATEWAY_PORT": str(gw_port),
            "SETTINGS_ENCRYPTION_KEY": key,
            "GATEWAY_SCHEDULER": "0",
            "GATEWAY_DATA_DIR": f"/tmp/{name}",
            "PYTHONPATH": str(REPO),
        }
        command = [sys.executable, "-m", "gateway"]
        if args.profile:
            command = ["py-spy", "record", "--rate", "500", "--format", "raw", "-o", args.profile, "--", *command]
        log = (
            os.open(args.gateway_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            if args.gateway_log
            else subprocess.DEVNULL
        )
        procs.append(subprocess.Popen(command, cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=log))
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "baseline_server.py"), "--port", str(base_port),
             "--dsn", dsn, "--secret", secret],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        await wait_ready(f"http://127.0.0.1:{gw_port}/healthz")
        await wait_ready(f"http://127.0.0.1:{base_port}/api/integrations/github/webhook")
        path = "/api/integrations/github/webhook"
        baseline = await load(f"http://127.0.0.1:{base_port}{path}", secret, args.requests,
                              args.concurrency, args.warmup, procs[1].pid)
        # Under py-spy the gateway is py-spy's child: its CPU is not counted then.
        gateway = await load(f"http://127.0.0.1:{gw_port}{path}?integration={integration_id}", secret,
                             args.requests, args.concurrency, args.warmup, procs[0].pid)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
    ratio = gateway["rps"] / baseline["rps"] if baseline["rps"] else 0.0
    return {
        "benchmark": "github_webhooks",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "baseline": baseline,
        "gateway": gateway,
        "throughput_ratio": round(ratio, 3),
        "targets": {"ratio_at_least": 0.5, "p99_ms_below": 50},
        "met": ratio >= 0.5 and gateway["p99_ms"] < 50 and gateway["failures"] == 0,
    }


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(asyncio.run(run(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
