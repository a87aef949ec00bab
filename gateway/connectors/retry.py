"""Pure helpers for provider rate limits, shared by the HTTP client and the connectors' cores."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import UTC


def parse_retry_after(value: str, now: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110 §10.2.3); None if unreadable."""
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone accepts "²"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no stated zone (RFC 5322 §3.3)
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, ignoring case, from a CIMultiDict or a plain dict alike."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None
