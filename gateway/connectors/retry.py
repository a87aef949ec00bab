"""Pure helpers for provider rate limits, shared by the HTTP client and the connectors' cores."""

from __future__ import annotations

import email.utils
from datetime import UTC


def parse_retry_after(value: str, now: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110 §10.2.3); None if unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no stated zone (RFC 5322 §3.3)
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)
