"""Timers in TimeTracker's conventions: one running entry per user, naive app-local wall times."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.database import Database
from gateway.db.models import Project, Task, TimeEntry, User, user_clients
from gateway.errors import BadRequest, Conflict
from gateway.events import TIMER_STARTED, TIMER_STOPPED, EventBus
from gateway.outbox import STARTED, STOPPED, TimerEventRecord, TimerOutbox
from gateway.timeutil import Clock, day_bounds_wall, from_wall, iso_wall, to_wall, utcnow, zone

log = logging.getLogger(__name__)

NOTES_MAX = 10_000
TIMER_SOURCE = "auto"  # TimeTracker's value for timers


def entry_view(entry: TimeEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "user_id": entry.user_id,
        "project_id": entry.project_id,
        "task_id": entry.task_id,
        "start_time": iso_wall(entry.start_time),
        "end_time": iso_wall(entry.end_time),
        "duration_seconds": entry.duration_seconds,
        "notes": entry.notes,
        "source": entry.source,
        "billable": entry.billable,
    }


def rounded_duration(seconds: int, rounding_minutes: int) -> int:
    """TimeTracker's rounding: to the nearest multiple of `settings.rounding_minutes`."""
    seconds = max(seconds, 0)
    if rounding_minutes <= 1:
        return seconds
    step = rounding_minutes * 60
    return int(round(seconds / step)) * step


@dataclass(frozen=True)
class TimerEvent:
    """What subscribers (Slack notifications) get: the entry and names to show."""

    kind: str
    entry: dict[str, Any]
    user_id: int
    user_display_name: str
    project_name: str | None
    task_name: str | None
    source: str = TIMER_SOURCE


@dataclass
class DaySummary:
    user_id: int
    day: str
    timezone: str
    total_seconds: int = 0
    billable_seconds: int = 0
    entries: int = 0
    running: bool = False
    projects: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "day": self.day,
            "timezone": self.timezone,
            "total_seconds": self.total_seconds,
            "billable_seconds": self.billable_seconds,
            "hours": round(self.total_seconds / 3600, 2),
            "entries": self.entries,
            "running": self.running,
            "projects": self.projects,
        }


class TimerService:
    def __init__(
        self, db: Database, events: EventBus, outbox: TimerOutbox, clock: Clock = utcnow
    ) -> None:
        self.db = db
        self.events = events
        self.outbox = outbox  # timer changes land in it in their own transaction
        self.clock = clock

    # -- projects ---------------------------------------------------------------------------

    def usable_projects_query(self, user: User):  # type: ignore[no-untyped-def]
        """Active projects the user may use; client-restricted users see their clients' only."""
        query = select(Project).where(Project.status == "active")
        if "user_clients" in self.db.optional_tables and user.role not in {"admin", "super_admin"}:
            restricted = exists().where(user_clients.c.user_id == user.id)
            allowed = exists().where(
                user_clients.c.user_id == user.id, user_clients.c.client_id == Project.client_id
            )
            query = query.where(or_(~restricted, allowed))
        return query.order_by(Project.name)

    async def usable_project(
        self,
        session: AsyncSession,
        user: User,
        project_id: object,
        *,
        field_name: str = "project_id",
    ) -> Project:
        pid = _positive_int(project_id, field_name)
        project = (
            await session.execute(self.usable_projects_query(user).where(Project.id == pid))
        ).scalar_one_or_none()
        if project is None:
            existing = await session.get(Project, pid)
            if existing is None:
                raise BadRequest(f"Unknown project {pid}", field=field_name)
            if existing.status != "active":
                raise BadRequest(f"Project {pid} is {existing.status}", field=field_name)
            raise BadRequest(f"You may not use project {pid}", field=field_name)
        return project

    # -- timers -----------------------------------------------------------------------------

    async def running(self, session: AsyncSession, user_id: int) -> TimeEntry | None:
        return (
            await session.execute(
                select(TimeEntry)
                .where(TimeEntry.user_id == user_id, TimeEntry.end_time.is_(None))
                .order_by(TimeEntry.start_time.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    async def status(self, user: User) -> dict[str, Any] | None:
        async with self.db.sessions() as session:
            entry = await self.running(session, user.id)
            return None if entry is None else entry_view(entry)

    async def start(
        self,
        user: User,
        project_id: object,
        task_id: object = None,
        notes: object = None,
        *,
        source: str = TIMER_SOURCE,
    ) -> dict[str, Any]:
        """Start a timer; Conflict when one runs. Safe under concurrent starts, across replicas."""
        if notes is not None and not isinstance(notes, str):
            raise BadRequest("notes must be a string", field="notes")
        if isinstance(notes, str) and len(notes) > NOTES_MAX:
            raise BadRequest(f"notes may be at most {NOTES_MAX} characters", field="notes")
        async with self.db.sessions() as session:
            project = await self.usable_project(session, user, project_id)
            task = await self._task_of(session, project, task_id)
            app_tz, _ = await self.db.app_settings(session)
            now = to_wall(self.clock(), app_tz)
            try:
                async with self.db.xact_lock(session, "timer", user.id):
                    if await self.running(session, user.id) is not None:
                        raise Conflict("A timer is already running")
                    entry = TimeEntry(
                        user_id=user.id,
                        project_id=project.id,
                        task_id=task.id if task else None,
                        start_time=now,
                        notes=(notes or None),
                        source=source,
                        billable=bool(project.billable),
                        paid=False,
                        break_seconds=0,
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(entry)
                    await session.flush()
                    await self.outbox.record(session, STARTED, entry.id, user.id)
                    await session.commit()
            except IntegrityError:
                # TimeTracker's ux_time_entries_one_active_per_user caught a start we raced with.
                await session.rollback()
                raise Conflict("A timer is already running") from None
            view = entry_view(entry)
        self._publish(TIMER_STARTED, view, user, project.name, task.name if task else None)
        return view

    async def stop(self, user: User, entry_id: int | None = None) -> dict[str, Any]:
        """Stop the running timer; with `entry_id`, only if that entry is the one running
        (checked under the lock: a Stop button never stops a timer started since)."""
        async with self.db.sessions() as session:
            async with self.db.xact_lock(session, "timer", user.id):
                entry = await self.running(session, user.id)
                if entry is None:
                    raise Conflict("No timer is running")
                if entry_id is not None and entry.id != entry_id:
                    raise Conflict("That timer is no longer running")
                app_tz, rounding = await self.db.app_settings(session)
                moment = self.clock()
                end_wall = to_wall(moment, app_tz)
                # Real elapsed seconds between the two instants, so a DST change is counted right.
                elapsed = int((moment - from_wall(entry.start_time, app_tz)).total_seconds())
                entry.end_time = max(end_wall, entry.start_time)
                entry.duration_seconds = rounded_duration(
                    elapsed - int(entry.break_seconds or 0), rounding
                )
                entry.updated_at = end_wall
                project = await session.get(Project, entry.project_id) if entry.project_id else None
                task = await session.get(Task, entry.task_id) if entry.task_id else None
                await self.outbox.record(session, STOPPED, entry.id, user.id)
                await session.commit()
            view = entry_view(entry)
        self._publish(
            TIMER_STOPPED,
            view,
            user,
            project.name if project else None,
            task.name if task else None,
        )
        return view

    async def today(self, user: User, day: date | None = None) -> DaySummary:
        """Today's (or `day`'s) hours in the user's time zone (users.timezone, else the app's)."""
        async with self.db.sessions() as session:
            app_tz, _ = await self.db.app_settings(session)
            user_tz = zone(user.timezone, app_tz)
            moment = self.clock()
            day = day or moment.astimezone(user_tz).date()
            lo, hi = day_bounds_wall(day, user_tz, app_tz)
            rows = (
                await session.execute(
                    select(TimeEntry, Project.name)
                    .outerjoin(Project, Project.id == TimeEntry.project_id)
                    .where(
                        TimeEntry.user_id == user.id,
                        TimeEntry.start_time < hi,
                        or_(TimeEntry.end_time.is_(None), TimeEntry.end_time > lo),
                    )
                )
            ).all()
        summary = DaySummary(user_id=user.id, day=day.isoformat(), timezone=str(user_tz))
        per_project: dict[str, int] = {}
        lo_at, hi_at = from_wall(lo, app_tz), from_wall(hi, app_tz)
        for entry, project_name in rows:
            seconds = _overlap_seconds(entry, app_tz, lo_at, hi_at, moment)
            if entry.end_time is None:
                summary.running = True
            summary.entries += 1
            summary.total_seconds += seconds
            if entry.billable:
                summary.billable_seconds += seconds
            name = project_name or "(no project)"
            per_project[name] = per_project.get(name, 0) + seconds
        summary.projects = [
            {"name": name, "seconds": secs}
            for name, secs in sorted(per_project.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return summary

    # -- helpers ----------------------------------------------------------------------------

    async def _task_of(
        self, session: AsyncSession, project: Project, task_id: object
    ) -> Task | None:
        if task_id is None or task_id == "":
            return None
        tid = _positive_int(task_id, "task_id")
        task = await session.get(Task, tid)
        if task is None or task.project_id != project.id:
            raise BadRequest(f"Task {tid} does not belong to project {project.id}", field="task_id")
        return task

    async def describe(self, record: TimerEventRecord) -> TimerEvent | None:
        """The names and entry of an outbox event, as they are now; None if the entry is gone."""
        async with self.db.sessions() as session:
            entry = await session.get(TimeEntry, record.entry_id)
            user = await session.get(User, record.user_id)
            if entry is None or user is None:
                return None
            project = await session.get(Project, entry.project_id) if entry.project_id else None
            task = await session.get(Task, entry.task_id) if entry.task_id else None
        kind = TIMER_STARTED if record.kind == STARTED else TIMER_STOPPED
        view = entry_view(entry)
        return TimerEvent(
            kind=kind,
            entry=view,
            user_id=user.id,
            user_display_name=user.display_name,
            project_name=project.name if project else None,
            task_name=task.name if task else None,
            source=view.get("source") or TIMER_SOURCE,
        )

    def _publish(
        self, kind: str, view: dict[str, Any], user: User, project: str | None, task: str | None
    ) -> None:
        self.outbox.wake()
        self.events.publish(
            kind,
            TimerEvent(
                kind=kind,
                entry=view,
                user_id=user.id,
                user_display_name=user.display_name,
                project_name=project,
                task_name=task,
                source=view.get("source") or TIMER_SOURCE,
            ),
        )


def _overlap_seconds(
    entry: TimeEntry, app_tz: tzinfo, lo: datetime, hi: datetime, now: datetime
) -> int:
    start = from_wall(entry.start_time, app_tz)
    end = now if entry.end_time is None else from_wall(entry.end_time, app_tz)
    if (
        entry.end_time is not None
        and entry.duration_seconds is not None
        and lo <= start
        and end <= hi
    ):
        return int(entry.duration_seconds)  # wholly inside the day: TimeTracker's own figure
    return max(int((min(end, hi) - max(start, lo)).total_seconds()), 0)


def _positive_int(value: object, field_name: str) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"{field_name} must be a positive integer", field=field_name)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _ascii_digits(value.strip()):
        number = int(value.strip())
    else:
        raise BadRequest(f"{field_name} must be a positive integer", field=field_name)
    if not 0 < number < 2**31:
        raise BadRequest(f"{field_name} must be a positive integer", field=field_name)
    return number


def _ascii_digits(text: str) -> bool:
    """0-9 only, at most 10 of them: str.isdigit() also accepts "²" and "١", int() not all."""
    return 0 < len(text) <= 10 and text.isascii() and text.isdigit()


__all__ = ["DaySummary", "TimerEvent", "TimerService", "entry_view", "rounded_duration"]
