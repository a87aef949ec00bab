"""Logging set-up with a filter that redacts token-shaped strings (second line of defence)."""

from __future__ import annotations

import logging
import re

# Provider token shapes, each with what is left of it: a short recognisable prefix.
_TOKEN_PATTERNS = [
    (re.compile(r"\bxox([abposr])-[A-Za-z0-9-]{6,}"), r"xox\1-..."),  # Slack tokens
    (re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"), "xapp-..."),
    (re.compile(r"\bgh([pousr])_[A-Za-z0-9]{16,}"), r"gh\1_..."),  # GitHub classic tokens
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), "github_pat_..."),
    (re.compile(r"\bya29\.[A-Za-z0-9_.-]{10,}"), "ya29...."),  # Google access tokens
    (re.compile(r"\b1//[A-Za-z0-9_-]{10,}"), "1//..."),  # Google refresh tokens
    (re.compile(r"\btt_[A-Za-z0-9]{32}\b"), "tt_..."),  # TimeTracker API tokens
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
