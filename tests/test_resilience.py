"""Shutdown within a bounded time, quiet logs for malformed requests, redaction, new settings."""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import re
import secrets
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway.logs import MalformedRequestFilter, redact
from gateway.settings import ConfigError, Settings
from tests.conftest import ON_POSTGRES

# -- settings ----------------------------------------------------------------------------------


def test_timeouts_have_short_defaults_and_are_validated() -> None:
    defaults = Settings.from_env({})
    assert defaults.shutdown_timeout < 10  # Docker sends SIGKILL 10 s after SIGTERM
    assert 1 <= defaults.db_timeout <= 10
    custom = Settings.from_env({"GATEWAY_SHUTDOWN_TIMEOUT": "2.5", "GATEWAY_DB_TIMEOUT": "3"})
    assert (custom.shutdown_timeout, custom.db_timeout) == (2.5, 3.0)
    for variable, value in [
        ("GATEWAY_SHUTDOWN_TIMEOUT", "soon"),
        ("GATEWAY_SHUTDOWN_TIMEOUT", "-1"),
        ("GATEWAY_SHUTDOWN_TIMEOUT", "nan"),
        ("GATEWAY_DB_TIMEOUT", "0"),
        ("GATEWAY_DB_TIMEOUT", "1e9"),
    ]:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({variable: value})
        assert caught.value.variable == variable


def test_event_lease_is_a_validated_setting_wired_to_the_outbox() -> None:
    from datetime import timedelta

    from gateway.outbox import SUBSCRIBER_TIMEOUT, TimerOutbox
    from gateway.services import build_services

    assert Settings.from_env({}).event_lease == 120
    custom = Settings.from_env({"GATEWAY_EVENT_LEASE": "15"})
    assert custom.event_lease == 15
    for value in ("9", "3601", "soon", "nan"):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"GATEWAY_EVENT_LEASE": value})
        assert caught.value.variable == "GATEWAY_EVENT_LEASE"
    key = Fernet.generate_key().decode()
    services = build_services(Settings(encryption_key=key, event_lease=15.0))
    assert services.outbox.lease == timedelta(seconds=15)
    # The lease outlasts the work it covers: a subscriber gets at most half of it.
    assert services.outbox.subscriber_timeout == 7.5
    assert TimerOutbox(services.db).subscriber_timeout == SUBSCRIBER_TIMEOUT
    with pytest.raises(ValueError):
        TimerOutbox(services.db, lease=timedelta(seconds=5))


# -- redaction ---------------------------------------------------------------------------------


def test_urlsafe_timetracker_tokens_are_redacted() -> None:
    for token in ["tt_" + secrets.token_urlsafe(24) for _ in range(200)] + [
        "tt_" + "-" * 32,
        "tt_abc_def-ghi_jkl-mno_pqr-stu_vwx-",
    ]:
        out = redact(f"token={token}, Authorization: Bearer {token}; raw {token}.")
        assert token[3:] not in out, out
        assert "tt_..." in out


# -- aiohttp's tracebacks for malformed requests -----------------------------------------------


def _record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        (type(exc), exc, None),
    )


def test_malformed_request_records_become_rate_limited_warnings() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    now = [0.0]
    quiet = MalformedRequestFilter(interval=10, per_interval=3, clock=lambda: now[0])
    shown = []
    for _ in range(10):
        record = _record(BadHttpMessage("Invalid header token"))
        if quiet.filter(record):
            shown.append(record)
    assert len(shown) == 3
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in shown)
    assert "rejected malformed request: BadHttpMessage" in shown[0].getMessage()
    now[0] = 11.0
    record = _record(BadHttpMessage("again"))
    assert quiet.filter(record)
    assert "(7 similar rejection(s) not logged)" in record.getMessage()
    # Our own failures are not the client's: they keep their level and traceback.
    ours = _record(RuntimeError("bug"))
    assert quiet.filter(ours) and ours.levelno == logging.ERROR and ours.exc_info


async def test_malformed_requests_log_no_tracebacks(client, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    garbage = [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/timer/start HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to a plain HTTP port
    ] * 6
    for request in garbage:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert not answer or answer.split(b" ", 2)[1].startswith(b"4"), answer[:100]
    aiohttp_records = [r for r in caplog.records if r.name.startswith("aiohttp.server")]
    assert not [r for r in aiohttp_records if r.exc_info or r.levelno >= logging.ERROR]
    warnings = [r for r in aiohttp_records if r.levelno == logging.WARNING]
    assert len(warnings) <= 5  # at most five a window, whatever the number of requests


# -- shutdown ----------------------------------------------------------------------------------


@pytest.mark.skipif(ON_POSTGRES, reason="process start-up is covered on SQLite")
def test_sigterm_answers_a_cut_upload_and_exits_in_time(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.test_cli import free_port, wait_ready

    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_"))
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        GATEWAY_PORT=str(port),
        GATEWAY_SHUTDOWN_TIMEOUT="1.5",
        GATEWAY_SCHEDULER="0",
        SETTINGS_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        password = None
        while password is None:
            line = proc.stdout.readline()
            assert line, "the gateway stopped before printing the admin password"
            match = re.search(r"with password: (\S+)", line)
            password = match.group(1) if match else None
        wait_ready(port)
        # Sign in through the form, as a browser does.
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        base = f"http://127.0.0.1:{port}"
        page = opener.open(f"{base}/login", timeout=5).read().decode()
        csrf = re.search(r'name="csrf_token"\s+value="([^"]+)"', page).group(1)
        form = f"username=admin&password={password}&csrf_token={csrf}".encode()
        opener.open(f"{base}/login", data=form, timeout=10).read()
        session = opener.open(f"{base}/api/session", timeout=5).read().decode()
        csrf = re.search(r'"csrf_token": "([^"]+)"', session).group(1)
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)

        # An upload that announces 100 kB and sends 10: the handler waits for the rest.
        upload = socket.create_connection(("127.0.0.1", port), timeout=15)
        upload.sendall(
            b"POST /api/timer/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Cookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n".encode()
            + b"Content-Length: 100000\r\n\r\n"
            + b'{"notes": "'
        )
        time.sleep(0.5)  # the request is in its handler, reading
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        answer = b""
        while chunk := upload.recv(65536):
            answer += chunk
        answered_after = time.monotonic() - began
        out, _ = proc.communicate(timeout=15)
        exited_after = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert b"Retry-After:" in answer
    assert 1.0 < answered_after < 4.0, answered_after
    assert exited_after < 6.0, exited_after  # well inside Docker's 10 s
    assert proc.returncode == 0
    assert "shutting down: waiting up to 1.5 s for 1 request(s) in flight" in out, out
    assert "shutdown: cut POST /api/timer/start" in out, out
    assert "Traceback" not in out, out
