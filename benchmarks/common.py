"""What the benchmarks share: a fresh PostgreSQL database, a real gateway process, numbers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            try:
                async with session.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank."""
    if not sorted_values:
        return 0.0
    rank = max(int(len(sorted_values) * q + 0.5) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    values = sorted(seconds)
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 2) if values else 0.0,
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(values[-1] * 1000, 2) if values else 0.0,
    }


def rss_mib(pid: int | None = None) -> float:
    """Resident set size now (VmRSS) of a process, MiB."""
    path = Path(f"/proc/{pid or 'self'}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident set size (VmHWM) of a process, MiB."""
    if pid is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def open_fds(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or 'self'}/fd"))


def emit(report: dict[str, Any]) -> None:
    """The one JSON document a benchmark prints on stdout (python -m benchmarks reads it)."""
    print(json.dumps(report, indent=2, default=str))


@dataclass
class BenchDatabase:
    """A fresh, migrated PostgreSQL database, dropped at the end."""

    name: str
    sa_url: str
    dsn: str  # plain postgresql:// for asyncpg
    key: str = field(default_factory=lambda: Fernet.generate_key().decode())

    def engine(self, **kwargs: Any) -> AsyncEngine:
        return create_async_engine(self.sa_url, **kwargs)


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "gw_bench") -> AsyncIterator[BenchDatabase]:
    from gateway.db.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(BASE_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(BASE_URL).set(database=name)
    db = BenchDatabase(
        name=name,
        sa_url=url.render_as_string(hide_password=False),
        dsn=url.set(drivername="postgresql").render_as_string(hide_password=False),
    )
    try:
        engine = db.engine()
        await upgrade(engine)
        await engine.dispose()
        yield db
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def make_user(conn: Any, username: str, full_name: str | None = None) -> int:
    return int(
        (
            await conn.execute(
                text(
                    "INSERT INTO users (username, full_name, role, is_active, created_at, "
                    "updated_at) VALUES (:n, :f, 'user', true, now(), now()) RETURNING id"
                ),
                {"n": username, "f": full_name},
            )
        ).scalar()
    )


async def make_project(conn: Any, name: str) -> int:
    return int(
        (
            await conn.execute(
                text(
                    "INSERT INTO projects (name, status, billable) VALUES (:n, 'active', true) "
                    "RETURNING id"
                ),
                {"n": name},
            )
        ).scalar()
    )


async def make_token(conn: Any, user_id: int) -> str:
    token = "tt_" + secrets.token_hex(16)
    await conn.execute(
        text(
            "INSERT INTO api_tokens (name, token_hash, token_prefix, user_id, scopes, is_active, "
            "created_at) VALUES ('bench', :h, :p, :u, '*', true, now())"
        ),
        {"h": hashlib.sha256(token.encode()).hexdigest(), "p": token[:10], "u": user_id},
    )
    return token


class Gateway:
    """`python -m gateway` as a child process on a free loopback port."""

    def __init__(
        self,
        db: BenchDatabase,
        *,
        env: dict[str, str] | None = None,
        log: str | None = None,
        profile: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": db.sa_url,
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_HOST": "127.0.0.1",
            "SETTINGS_ENCRYPTION_KEY": db.key,
            "GATEWAY_SCHEDULER": "0",
            "GATEWAY_DATA_DIR": f"/tmp/{db.name}",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        self.log = log
        self.profile = profile  # py-spy's collapsed stacks of the gateway, written at the end
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> Gateway:
        log = (
            os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            if self.log
            else subprocess.DEVNULL
        )
        command = [sys.executable, "-m", "gateway"]
        if self.profile:
            command = ["py-spy", "record", "--rate", "500", "--format", "raw",
                       "-o", self.profile, "--", *command]
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        await wait_ready(f"{self.url}/healthz")
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def pg_counters(dsn: str) -> dict[str, int]:
    """The database's session and transaction counters (pg_stat_database), this probe excluded."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT sessions, xact_commit, xact_rollback, numbackends FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return {
        "sessions": int(row["sessions"]) - 1,
        "transactions": int(row["xact_commit"]) + int(row["xact_rollback"]),
        "backends": int(row["numbackends"]) - 1,
    }


def per_request(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    """New PostgreSQL sessions and transactions per request between two pg_counters()."""
    n = max(requests, 1)
    return {
        "pg_sessions_opened": after["sessions"] - before["sessions"],
        "pg_transactions_per_request": round(
            (after["transactions"] - before["transactions"]) / n, 2
        ),
    }


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_cpu_seconds() -> float:
    """CPU seconds so far of every PostgreSQL process on this machine (all databases)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
