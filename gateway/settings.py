"""Configuration read from the environment once, validated, then passed around explicitly."""

from __future__ import annotations

import dataclasses
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gateway.errors import ConfigError

__all__ = ["ConfigError", "Settings"]


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(name, f"expected a number of seconds, got {raw!r}") from None
    if not lo <= value <= hi:  # also refuses nan
        raise ConfigError(name, f"must be between {lo:g} and {hi:g} seconds, got {raw.strip()}")
    return value


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip() or default
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(name, f"expected an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///./gateway.db"
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    data_dir: Path = Path("./.gateway")
    auto_migrate: bool = True
    scheduler: bool = True
    frame_ancestors: str = "'self'"
    encryption_key: str | None = None
    encryption_key_file: Path | None = None
    encryption_old_keys: tuple[str, ...] = ()
    timetracker_secret_key: str | None = field(default=None, repr=False)
    timetracker_session_cookie: str = "session"
    sync_concurrency: int = 10
    event_max_age: int = 3600  # seconds: older timer events are not announced
    event_lease: float = 120.0  # seconds a dispatcher holds a timer event before others may
    db_timeout: float = 5.0
    shutdown_timeout: float = 5.0
    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    github_api_url: str = "https://api.github.com"
    slack_api_url: str = "https://slack.com/api"
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
    google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    google_calendar_api_url: str = "https://www.googleapis.com/calendar/v3"
    tz: str | None = None

    def __repr__(self) -> str:  # secrets never appear in a repr
        shown = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name
            not in {
                "encryption_key",
                "encryption_old_keys",
                "timetracker_secret_key",
                "google_client_secret",
            }
        }
        return f"Settings({shown})"

    @property
    def path_prefix(self) -> str:
        """The path of GATEWAY_PUBLIC_URL without a trailing slash ('' at the root)."""
        return urlsplit(self.public_url).path.rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.public_url).scheme == "https"

    def public(self, path: str) -> str:
        """An absolute external URL for a route path such as '/api/x'."""
        return self.public_url.rstrip("/") + path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        host = (env.get("GATEWAY_HOST") or "").strip() or "127.0.0.1"
        port = _int(env, "GATEWAY_PORT", 8080, 1, 65535)

        database_url = (env.get("DATABASE_URL") or "").strip() or cls.database_url
        scheme = database_url.split("://", 1)[0] if "://" in database_url else ""
        if scheme not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
            if scheme in {"postgresql", "postgres", "postgresql+psycopg2"}:
                hint = "use postgresql+asyncpg://…"
            else:
                hint = "expected sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
            raise ConfigError("DATABASE_URL", f"unsupported URL ({hint})")

        public_url = _http_url(env, "GATEWAY_PUBLIC_URL", f"http://{host}:{port}")
        if urlsplit(public_url).query or urlsplit(public_url).fragment:
            raise ConfigError("GATEWAY_PUBLIC_URL", "must not carry a query or fragment")

        frame_ancestors = (env.get("GATEWAY_FRAME_ANCESTORS") or "").strip() or "'self'"
        if any(ch in frame_ancestors for ch in ";,\r\n"):
            raise ConfigError(
                "GATEWAY_FRAME_ANCESTORS", "space-separated CSP sources only (no ';' or ',')"
            )

        key = (env.get("SETTINGS_ENCRYPTION_KEY") or "").strip() or None
        key_file_raw = (env.get("SETTINGS_ENCRYPTION_KEY_FILE") or "").strip()
        key_file = Path(key_file_raw) if key_file_raw else None
        if key_file is not None and key is None and not key_file.is_file():
            raise ConfigError("SETTINGS_ENCRYPTION_KEY_FILE", f"no such file: {key_file}")
        old_keys = tuple(
            k.strip()
            for k in (env.get("SETTINGS_ENCRYPTION_OLD_KEYS") or "").split(",")
            if k.strip()
        )
        # Key syntax is checked here so that a typo stops start-up with the variable's name.
        from gateway.crypto import validate_key  # local import: crypto imports nothing of ours

        if key is not None:
            validate_key("SETTINGS_ENCRYPTION_KEY", key)
        for old in old_keys:
            validate_key("SETTINGS_ENCRYPTION_OLD_KEYS", old)

        tz = (env.get("TZ") or "").strip() or None
        if tz is not None:
            tz = tz.lstrip(":")
            try:
                zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigError("TZ", f"unknown IANA time zone {tz!r}") from None

        cookie = (env.get("TIMETRACKER_SESSION_COOKIE") or "").strip() or "session"
        if cookie == "tt_gateway_session":
            raise ConfigError("TIMETRACKER_SESSION_COOKIE", "clashes with the gateway's own cookie")

        return cls(
            database_url=database_url,
            host=host,
            port=port,
            public_url=public_url,
            data_dir=Path((env.get("GATEWAY_DATA_DIR") or "").strip() or "./.gateway"),
            auto_migrate=_flag(env, "GATEWAY_AUTO_MIGRATE", True),
            scheduler=_flag(env, "GATEWAY_SCHEDULER", True),
            frame_ancestors=frame_ancestors,
            encryption_key=key,
            encryption_key_file=key_file,
            encryption_old_keys=old_keys,
            timetracker_secret_key=(env.get("TIMETRACKER_SECRET_KEY") or None),
            timetracker_session_cookie=cookie,
            sync_concurrency=_int(env, "GATEWAY_SYNC_CONCURRENCY", 10, 1, 200),
            event_max_age=_int(env, "GATEWAY_EVENT_MAX_AGE", 3600, 60, 7 * 24 * 3600),
            event_lease=_seconds(env, "GATEWAY_EVENT_LEASE", 120.0, 10, 3600),
            db_timeout=_seconds(env, "GATEWAY_DB_TIMEOUT", 5.0, 0.5, 120),
            # Docker's stop waits 10 s before SIGKILL: the default leaves room for clean-up.
            shutdown_timeout=_seconds(env, "GATEWAY_SHUTDOWN_TIMEOUT", 5.0, 0, 300),
            google_client_id=(env.get("GOOGLE_CLIENT_ID") or "").strip() or None,
            google_client_secret=(env.get("GOOGLE_CLIENT_SECRET") or "").strip() or None,
            github_api_url=_http_url(env, "GITHUB_API_URL", cls.github_api_url),
            slack_api_url=_http_url(env, "SLACK_API_URL", cls.slack_api_url),
            google_auth_url=_http_url(env, "GOOGLE_AUTH_URL", cls.google_auth_url),
            google_token_url=_http_url(env, "GOOGLE_TOKEN_URL", cls.google_token_url),
            google_revoke_url=_http_url(env, "GOOGLE_REVOKE_URL", cls.google_revoke_url),
            google_userinfo_url=_http_url(env, "GOOGLE_USERINFO_URL", cls.google_userinfo_url),
            google_calendar_api_url=_http_url(
                env, "GOOGLE_CALENDAR_API_URL", cls.google_calendar_api_url
            ),
            tz=tz,
        )
