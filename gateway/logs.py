"""Logging set-up with a filter that redacts token-shaped strings (second line of defence)."""

from __future__ import annotations

import logging
import re
import time

# Provider token shapes, each with what is left of it: a short recognisable prefix.
_TOKEN_PATTERNS = [
    (re.compile(r"\bxox([abposr])-[A-Za-z0-9-]{6,}"), r"xox\1-..."),  # Slack tokens
    (re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"), "xapp-..."),
    (re.compile(r"\bgh([pousr])_[A-Za-z0-9]{16,}"), r"gh\1_..."),  # GitHub classic tokens
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), "github_pat_..."),
    (re.compile(r"\bya29\.[A-Za-z0-9_.-]{10,}"), "ya29...."),  # Google access tokens
    (re.compile(r"\b1//[A-Za-z0-9_-]{10,}"), "1//..."),  # Google refresh tokens
    # TimeTracker API tokens: "tt_" + secrets.token_urlsafe (so "-" and "_" occur in them).
    (re.compile(r"(?<![A-Za-z0-9])tt_[A-Za-z0-9_-]{32,}"), "tt_..."),
    (re.compile(r"enc:v1:[A-Za-z0-9_=-]{20,}"), "enc:v1:..."),  # our own ciphertexts
    (re.compile(r"\bgAAAAA[A-Za-z0-9_=-]{20,}"), "gAAAAA..."),  # bare Fernet tokens
]
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_SECRET_ASSIGN = re.compile(
    r"(?i)\b((?:client_secret|refresh_token|access_token|signing_secret|webhook_secret|"
    r"bot_token|github_token|code)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]{4,}"
)


def redact(text: str) -> str:
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    text = _BEARER.sub(r"\1 ...", text)
    return _SECRET_ASSIGN.sub(r"\1...", text)


def truncate_secret(value: str | None) -> str:
    """`xoxb-...`, `ghp_...`: what a log line may show of a secret."""
    if not value:
        return "<none>"
    for sep in ("-", "_", "."):
        head, found, _ = value.partition(sep)
        if found and 1 < len(head) <= 10:
            return f"{head}{sep}..."
    return "..."


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message with token-shaped strings redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not silence the log line
            message = str(record.msg)
        redacted = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg, record.args = redacted, None
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp's own error records for malformed requests: one WARNING line, rate-limited.

    A client that sends a bad request line, bad headers or a body that does not decode makes
    aiohttp log "Error handling request" (or "Unhandled exception" while it drains the body)
    with a full traceback. That is the client's fault, not ours: say it in one line without a
    traceback, at most `per_interval` lines per `interval` seconds, with a count of the rest.
    Any other record passes untouched.
    """

    def __init__(self, interval: float = 10.0, per_interval: int = 5, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.interval = interval
        self.per_interval = per_interval
        self.clock = clock
        self._window_start = -float("inf")
        self._in_window = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _is_client_fault(exc):
            return True
        now = self.clock()
        if now - self._window_start >= self.interval:
            self._window_start, self._in_window = now, 0
        self._in_window += 1
        if self._in_window > self.per_interval:
            self._suppressed += 1
            return False
        detail = _one_line(exc)
        if self._suppressed:
            detail += f" ({self._suppressed} similar rejection(s) not logged)"
            self._suppressed = 0
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = "rejected malformed request: %s", (detail,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _is_client_fault(exc: BaseException) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestPayloadError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the cause chain, bounded
        seen.add(id(current))
        if isinstance(current, HttpProcessingError | RequestPayloadError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    install_aiohttp_log_filter()


def install_aiohttp_log_filter() -> None:
    """Put MalformedRequestFilter on the loggers aiohttp reports protocol errors on (once)."""
    for name in ("aiohttp.server", "aiohttp.web_protocol"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
            logger.addFilter(MalformedRequestFilter())
