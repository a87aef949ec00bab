"""The command line, run as a user would: a real process, a fresh database, the environment."""

from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ON_POSTGRES, REPO

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="CLI start-up is covered on SQLite")


def run(args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_"))
    }
    base.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(REPO),
    )
    return base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_invalid_configuration_stops_with_one_line(env: dict[str, str]) -> None:
    result = run(["migrate"], {**env, "GATEWAY_PORT": "eighty"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["configuration error: GATEWAY_PORT: expected a whole number, got 'eighty'"]


def test_migrate_users_create_and_rotate_keys(env: dict[str, str], tmp_path: Path) -> None:
    assert run(["migrate"], env).returncode == 0
    created = run(
        ["users", "create", "Carol", "--admin", "--password-stdin"], env, stdin="long-password\n"
    )
    assert created.returncode == 0, created.stderr
    assert "created user 'carol'" in created.stdout
    again = run(["users", "create", "carol", "--password-stdin"], env, stdin="long-password\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    short = run(["users", "create", "dave", "--password-stdin"], env, stdin="short\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    rotated = run(["rotate-keys"], env)
    assert rotated.returncode == 0 and "re-encrypted 0" in rotated.stdout
    assert (tmp_path / "data" / "encryption.key").is_file()


def test_run_job_unknown_name_fails(env: dict[str, str]) -> None:
    result = run(["run-job", "no_such_job"], env)
    assert result.returncode == 2
    assert "unknown job 'no_such_job'" in result.stderr


def serve(env: dict[str, str], key: str) -> tuple[subprocess.Popen[str], int]:
    """`python -m gateway` on a free port, its log on stdout."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        cwd=REPO,
        env={**env, "GATEWAY_PORT": str(port), "SETTINGS_ENCRYPTION_KEY": key},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, port


def wait_ready(port: int) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not become ready")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_serve_first_run_prints_admin_password_and_login_works(env: dict[str, str]) -> None:
    key = Fernet.generate_key().decode()
    proc, port = serve(env, key)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        password = None
        while time.monotonic() < deadline and password is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"First run: created user 'admin' with password: (\S+)", line)
            if match:
                password = match.group(1)
        assert password, "".join(lines)
        wait_ready(port)
        # Log in through the form with the printed password.
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        html = opener.open(f"http://127.0.0.1:{port}/login", timeout=5).read().decode()
        csrf = re.search(r'name="csrf_token"\s+value="([^"]+)"', html).group(1)
        data = f"username=admin&password={password}&csrf_token={csrf}".encode()
        page = opener.open(f"http://127.0.0.1:{port}/login", data=data, timeout=10).read().decode()
        assert "Personal connectors" in page
        session = opener.open(f"http://127.0.0.1:{port}/api/session", timeout=5).read().decode()
        assert '"is_admin": true' in session
    finally:
        stop(proc)
    # A second start on the same database creates nobody.
    second, port = serve(env, key)
    try:
        wait_ready(port)
    finally:
        out = stop(second)
    assert "First run" not in out


def test_unusable_database_is_one_line_not_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    result = run(
        ["migrate"], {**env, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db"}
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("database error")


def test_migrate_to_rolls_back_and_forward(env: dict[str, str], tmp_path: Path) -> None:
    import sqlite3

    def tables() -> set[str]:
        with sqlite3.connect(tmp_path / "cli.db") as conn:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    assert run(["migrate"], env).returncode == 0
    assert "gateway_job_slots" in tables()
    back = run(["migrate", "--to", "157_gateway_github_task_function"], env)
    assert back.returncode == 0, back.stderr
    assert "to 157_gateway_github_task_function" in back.stdout
    assert "gateway_job_slots" not in tables() and "gateway_timer_events" not in tables()
    assert "gateway_webhook_deliveries" in tables()
    unknown = run(["migrate", "--to", "999_nothing"], env)
    assert unknown.returncode == 2 and "unknown revision" in unknown.stderr
    assert run(["migrate", "--to", "head"], env).returncode == 0
    assert "gateway_job_slots" in tables()
