"""Time conventions: naive UTC for integrations, naive app-local wall time for entries and tasks."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def utcnow_naive() -> datetime:
    """integrations.*_at are stored as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def zone(name: str | None, fallback: tzinfo = UTC) -> tzinfo:
    if not name:
        return fallback
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return fallback


def to_wall(moment: datetime, tz: tzinfo) -> datetime:
    """An aware moment as naive wall time in tz (how time_entries store it)."""
    return moment.astimezone(tz).replace(tzinfo=None)


def from_wall(wall: datetime, tz: tzinfo) -> datetime:
    """A naive wall time in tz as an aware moment."""
    return wall.replace(tzinfo=tz)


def day_bounds_wall(day: date, user_tz: tzinfo, app_tz: tzinfo) -> tuple[datetime, datetime]:
    """The user's local calendar day as [start, end) in app-local wall time.

    TimeTracker stores wall times in the app zone, so a user in another zone has a day that
    starts and ends at other wall-clock hours there; compare like with like.
    """
    start = datetime.combine(day, time.min, tzinfo=user_tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=user_tz)
    return to_wall(start, app_tz), to_wall(end, app_tz)


def iso_utc(naive_utc: datetime | None) -> str | None:
    if naive_utc is None:
        return None
    return naive_utc.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def iso_wall(wall: datetime | None) -> str | None:
    return None if wall is None else wall.isoformat()
