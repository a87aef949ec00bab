"""Settings, secrets, log redaction, and the outbound HTTP client's retry rules."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from gateway.connectors.base import Config
from gateway.connectors.http import HttpClient, retry_after_seconds
from gateway.crypto import PREFIX, SecretBox, SecretError, load_or_create_primary_key
from gateway.logs import RedactingFilter, redact, truncate_secret
from gateway.metrics import Metrics
from gateway.settings import ConfigError, Settings

# -- settings ----------------------------------------------------------------------------------


def test_defaults_match_the_design() -> None:
    s = Settings.from_env({})
    assert s.database_url == "sqlite+aiosqlite:///./gateway.db"
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.data_dir == Path("./.gateway")
    assert s.auto_migrate and s.scheduler
    assert s.frame_ancestors == "'self'"
    assert s.timetracker_session_cookie == "session"
    assert s.sync_concurrency == 10
    assert s.github_api_url == "https://api.github.com"
    assert s.slack_api_url == "https://slack.com/api"
    assert s.google_calendar_api_url == "https://www.googleapis.com/calendar/v3"
    assert s.path_prefix == ""


def test_public_url_prefix_and_secure_cookies() -> None:
    s = Settings.from_env({"GATEWAY_PUBLIC_URL": "https://tt.example.com/gateway/"})
    assert s.path_prefix == "/gateway"
    assert s.secure_cookies
    assert s.public("/api/x") == "https://tt.example.com/gateway/api/x"


def test_public_url_follows_host_and_port() -> None:
    s = Settings.from_env({"GATEWAY_HOST": "0.0.0.0", "GATEWAY_PORT": "9000"})
    assert s.public_url == "http://0.0.0.0:9000"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
        ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/db"}, "DATABASE_URL"),
        ({"GATEWAY_AUTO_MIGRATE": "maybe"}, "GATEWAY_AUTO_MIGRATE"),
        ({"GATEWAY_SCHEDULER": "2"}, "GATEWAY_SCHEDULER"),
        ({"GATEWAY_PUBLIC_URL": "ftp://x"}, "GATEWAY_PUBLIC_URL"),
        ({"GATEWAY_FRAME_ANCESTORS": "'self'; script-src *"}, "GATEWAY_FRAME_ANCESTORS"),
        ({"SETTINGS_ENCRYPTION_KEY": "short"}, "SETTINGS_ENCRYPTION_KEY"),
        ({"SETTINGS_ENCRYPTION_OLD_KEYS": "a,b"}, "SETTINGS_ENCRYPTION_OLD_KEYS"),
        ({"SETTINGS_ENCRYPTION_KEY_FILE": "/nonexistent/key"}, "SETTINGS_ENCRYPTION_KEY_FILE"),
        ({"GATEWAY_SYNC_CONCURRENCY": "0"}, "GATEWAY_SYNC_CONCURRENCY"),
        ({"GITHUB_API_URL": "not a url"}, "GITHUB_API_URL"),
        ({"GOOGLE_TOKEN_URL": "//x"}, "GOOGLE_TOKEN_URL"),
        ({"TZ": "Mars/Olympus"}, "TZ"),
        ({"TIMETRACKER_SESSION_COOKIE": "tt_gateway_session"}, "TIMETRACKER_SESSION_COOKIE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)


def test_repr_hides_secrets() -> None:
    s = Settings.from_env(
        {
            "TIMETRACKER_SECRET_KEY": "flask-secret-value",
            "GOOGLE_CLIENT_SECRET": "google-secret-value",
            "SETTINGS_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        }
    )
    text = repr(s)
    assert "flask-secret-value" not in text and "google-secret-value" not in text
    assert s.encryption_key and s.encryption_key not in text


# -- secrets -----------------------------------------------------------------------------------


def test_encrypt_decrypt_in_timetracker_format() -> None:
    key = Fernet.generate_key().decode()
    box = SecretBox(key)
    stored = box.encrypt("xoxb-123")
    assert stored.startswith(PREFIX)
    assert "xoxb-123" not in stored
    assert box.decrypt(stored) == "xoxb-123"
    # TimeTracker reads it with plain Fernet after stripping the prefix.
    assert Fernet(key.encode()).decrypt(stored[len(PREFIX) :].encode()) == b"xoxb-123"


def test_legacy_plaintext_is_read_and_rewrapped() -> None:
    box = SecretBox(Fernet.generate_key().decode())
    assert box.decrypt("legacy-token") == "legacy-token"
    assert box.needs_rewrap("legacy-token")
    assert box.decrypt(box.rewrap("legacy-token")) == "legacy-token"


def test_old_keys_decrypt_and_rotation_moves_to_primary() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = SecretBox(old).encrypt("ghp_secret")
    box = SecretBox(new, (old,))
    assert box.decrypt(stored) == "ghp_secret"
    assert box.needs_rewrap(stored)
    rewrapped = box.rewrap(stored)
    assert not box.needs_rewrap(rewrapped)
    # Remembered answers stay true: current stays current, an old key's value still needs it.
    assert not box.needs_rewrap(rewrapped) and box.needs_rewrap(stored)
    assert SecretBox(new).decrypt(rewrapped) == "ghp_secret"
    with pytest.raises(SecretError):
        SecretBox(new).decrypt(stored)


def test_generated_key_file_is_private_and_stable(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        key, where = load_or_create_primary_key(None, None, tmp_path / "data")
    path = tmp_path / "data" / "encryption.key"
    assert where == str(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert str(path.resolve()) in caplog.text
    assert key not in caplog.text
    again, _ = load_or_create_primary_key(None, None, tmp_path / "data")
    assert again == key


def test_config_view_keeps_secrets_out_of_public() -> None:
    box = SecretBox(Fernet.generate_key().decode())
    config = Config({}, box, ["bot_token"])
    config.set_secret("bot_token", "xoxb-1-2-3")
    config.set("channel_id", "C1")
    public = config.public({"notify_on_stop": True})
    assert public == {"notify_on_stop": True, "channel_id": "C1", "has_bot_token": True}
    assert config.raw["bot_token"].startswith(PREFIX)
    assert config.secret("bot_token") == "xoxb-1-2-3"
    with pytest.raises(KeyError):
        config.get("bot_token")


# -- log redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "leak", "shown"),
    [
        ("posting with xoxb-1234567890-abcdefghij", "1234567890-abcdefghij", "xoxb-..."),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnop", "ghp_..."),
        ("Authorization: Bearer abc.def.ghi123", "abc.def.ghi123", "Bearer ..."),
        ("refresh 1//0gabcdefghijklmnop", "0gabcdefghijklmnop", "1//..."),
        ("access ya29.a0AfH6SMBabcdefghijk", "a0AfH6SMBabcdefghijk", "ya29...."),
        ("client_secret=GOCSPX-abcdef123", "GOCSPX-abcdef123", "client_secret=..."),
        ("stored enc:v1:gAAAAABnabcdefghijklmnopqrstuv", "abcdefghijklmnop", "enc:v1:..."),
        ("api tt_0123456789abcdef0123456789abcdef", "0123456789abcdef", "tt_..."),
    ],
)
def test_redaction(raw: str, leak: str, shown: str) -> None:
    out = redact(raw)
    assert leak not in out
    assert shown in out


def test_filter_redacts_args_and_tracebacks() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "token %s", ("xoxb-1111111111-secret",), None
    )
    try:
        raise ValueError("ghp_abcdefghijklmnopqrstuvwxyz0123")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert "secret" not in record.getMessage()
    assert "abcdefghijklmnop" not in (record.exc_text or "")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("xoxb-123-456", "xoxb-..."), ("ghp_abc", "ghp_..."), ("opaque", "..."), (None, "<none>")],
)
def test_truncate_secret(value: str | None, shown: str) -> None:
    assert truncate_secret(value) == shown


# -- outbound HTTP --------------------------------------------------------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class ScriptedServer:
    """A local HTTP server that answers each request with the next scripted response."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], object]] = []
        self.requests: list[str] = []

    def add(self, status: int, headers: dict[str, str] | None = None, payload=None) -> None:
        self.answers.append((status, headers or {}, payload))

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        status, headers, payload = self.answers.pop(0)
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(payload, status=status, headers=headers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def http(aiohttp_server):  # type: ignore[no-untyped-def]
    import aiohttp

    scripted = ScriptedServer()
    server = await aiohttp_server(scripted.app())
    session = aiohttp.ClientSession()
    sleeps = Sleeps()
    client = HttpClient(session, Metrics(), sleep=sleeps, clock=lambda: 1000.0)
    yield client, sleeps, scripted, str(server.make_url("/x"))
    await session.close()


async def test_retry_after_is_honoured(http) -> None:
    client, sleeps, server, url = http
    server.add(429, {"Retry-After": "3"})
    server.add(200, payload={"fine": True})
    result = await client.request("example", "GET", url)
    assert result.ok and result.data == {"fine": True}
    assert sleeps.calls == [3.0]
    assert server.requests == ["GET /x", "GET /x"]


async def test_retries_are_bounded(http) -> None:
    client, sleeps, server, url = http
    for _ in range(5):
        server.add(503)
    result = await client.request("example", "GET", url)
    assert not result.ok and result.status == 503
    assert result.error == "example answered HTTP 503"
    assert len(sleeps.calls) == 2
    assert len(server.requests) == 3


async def test_long_retry_after_is_an_error_not_a_wait(http) -> None:
    client, sleeps, server, url = http
    server.add(429, {"Retry-After": "3600"})
    result = await client.request("example", "GET", url)
    assert not result.ok and "retry after 3600" in result.error
    assert sleeps.calls == []


async def test_network_errors_become_results(http, unused_tcp_port_factory) -> None:
    client, sleeps, _server, _url = http
    closed = f"http://127.0.0.1:{unused_tcp_port_factory()}/x"  # nothing listens there
    result = await client.request("example", "POST", closed, json_body={})
    assert result.status is None and not result.ok
    assert result.error.startswith("network error")
    assert sleeps.calls == []  # a POST is not retried after a network error


async def test_provider_error_message_is_reported(http) -> None:
    client, _, server, url = http
    server.add(401, payload={"message": "Bad credentials"})
    result = await client.request("GitHub", "GET", url)
    assert result.error == "GitHub answered HTTP 401: Bad credentials"


def test_retry_after_http_date() -> None:
    assert (
        retry_after_seconds(503, {"Retry-After": "Thu, 01 Jan 1970 00:16:50 GMT"}, 1000.0) == 10.0
    )
    assert retry_after_seconds(503, {}, 0.0) is None
    assert retry_after_seconds(503, {"Retry-After": "soon"}, 0.0) is None
