"""What `/tt` and the Stop button do, for the one TimeTracker user the Slack user is linked to."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any, Protocol

from sqlalchemy import select

from gateway.connectors.slack import core
from gateway.db.database import Database
from gateway.db.models import Project, Task, TimeEntry, User
from gateway.errors import BadRequest, Conflict
from gateway.timer.service import TimerService
from gateway.timeutil import Clock, from_wall


class SlackConnector(Protocol):
    """What the commands use of the connector (gateway/connectors/slack/service.py)."""

    db: Database
    timer: TimerService
    clock: Clock

Reply = dict[str, Any]
CLOSED_TASK_STATUSES = ("done", "cancelled")


async def run_command(slack: SlackConnector, user: User, request: core.SlashCommand) -> Reply:
    command = core.parse_command(request.text)
    name = request.command or core.COMMAND
    if command.verb == "start":
        return await start(slack, user, command, name)
    if command.verb == "stop":
        return await stop(slack, user, name)
    if command.verb == "status":
        return await status(slack, user.id, name)
    if command.verb == "today":
        summary = await slack.timer.today(user)
        return core.reply_today(summary.total_seconds / 3600, len(summary.projects))
    return core.reply_help(command.unknown, command=name)


async def _names(slack: SlackConnector, entry: dict[str, Any]) -> tuple[str, str | None]:
    async with slack.db.sessions() as session:
        project = await session.get(Project, entry["project_id"]) if entry["project_id"] else None
        task = await session.get(Task, entry["task_id"]) if entry.get("task_id") else None
    return (project.name if project else ""), (task.name if task else None)


async def _elapsed(slack: SlackConnector, entry: dict[str, Any]) -> tuple[datetime, float]:
    """The running entry's start (wall time) and the seconds since."""
    app_tz, _ = await slack.db.app_settings()
    started = datetime.fromisoformat(entry["start_time"])
    return started, (slack.clock() - from_wall(started, app_tz)).total_seconds()


async def _already_running(slack: SlackConnector, entry: dict[str, Any], name: str) -> Reply:
    project, task = await _names(slack, entry)
    started, elapsed = await _elapsed(slack, entry)
    return core.reply_already_running(project, task, started, elapsed, command=name)


async def start(slack: SlackConnector, user: User, command: core.Command, name: str) -> Reply:
    """A running timer is reported, never replaced; the project is matched among usable ones."""
    if not command.project:
        return core.reply_project_required(command=name)
    running = await slack.timer.status(user)
    if running is not None:
        return await _already_running(slack, running, name)
    async with slack.db.sessions() as session:
        projects = [
            (p.id, p.name)
            for p in (await session.execute(slack.timer.usable_projects_query(user))).scalars()
        ]
        match = core.match_by_name(command.project, projects)
        if match.status == "ambiguous":
            return core.reply_ambiguous("project", command.project, match, command=name)
        if not match.found:
            return core.reply_not_found("project", command.project)
        task_match = None
        if command.task:
            tasks = [
                (t.id, t.name)
                for t in (
                    await session.execute(
                        select(Task)
                        .where(
                            Task.project_id == match.id,
                            Task.status.not_in(CLOSED_TASK_STATUSES),
                        )
                        .order_by(Task.name, Task.id)
                    )
                ).scalars()
            ]
            task_match = core.match_by_name(command.task, tasks)
            if task_match.status == "ambiguous":
                return core.reply_ambiguous("task", command.task, task_match, command=name)
            if not task_match.found:
                return core.reply_not_found("task", command.task)
    try:
        entry = await slack.timer.start(user, match.id, task_match.id if task_match else None)
    except Conflict:
        running = await slack.timer.status(user)
        if running is None:
            return core.reply_error("A timer is already running.")
        return await _already_running(slack, running, name)
    except BadRequest as exc:
        return core.reply_error(exc.message)
    return core.reply_started(
        match.name or "",
        task_match.name if task_match else None,
        datetime.fromisoformat(entry["start_time"]),
    )


async def stop(slack: SlackConnector, user: User, name: str) -> Reply:
    try:
        entry = await slack.timer.stop(user)
    except Conflict:
        return core.reply_not_running(command=name)
    project, task = await _names(slack, entry)
    return core.reply_stopped(project, task, float(entry["duration_seconds"] or 0))


# The running entry with its names in one statement: /tt status is the most frequent command.
# On PostgreSQL it runs on the webhook pipeline's autocommit connection (no ORM, no session).
STATUS_SQL = (
    "SELECT te.start_time, p.name, t.name FROM time_entries AS te "
    "LEFT JOIN projects AS p ON p.id = te.project_id "
    "LEFT JOIN tasks AS t ON t.id = te.task_id "
    "WHERE te.user_id = $1 AND te.end_time IS NULL "
    "ORDER BY te.start_time DESC LIMIT 1"
)


async def status(
    slack: SlackConnector,
    user_id: int,
    name: str,
    *,
    conn: Any = None,
    app_tz: tzinfo | None = None,
) -> Reply:
    """Project, task, start time and elapsed time of the running timer.

    `conn`: an asyncpg connection to read on (the pipeline's); `app_tz`: the app time zone
    when the caller read it already (reading it may need a pooled connection of its own).
    """
    running: Sequence[Any] | None
    if conn is not None:
        running = await conn.fetchrow(STATUS_SQL, user_id)
    else:
        async with slack.db.sessions() as session:
            running = (
                await session.execute(
                    select(TimeEntry.start_time, Project.name, Task.name)
                    .outerjoin(Project, Project.id == TimeEntry.project_id)
                    .outerjoin(Task, Task.id == TimeEntry.task_id)
                    .where(TimeEntry.user_id == user_id, TimeEntry.end_time.is_(None))
                    .order_by(TimeEntry.start_time.desc())
                    .limit(1)
                )
            ).first()
    if running is None:
        return core.reply_not_running(command=name)
    started, project, task = running
    if app_tz is None:
        app_tz, _ = await slack.db.app_settings()
    elapsed = (slack.clock() - from_wall(started, app_tz)).total_seconds()
    return core.reply_status(project or "", task, started, elapsed)


async def stop_button(slack: SlackConnector, user: User, action: core.BlockAction) -> Reply:
    """The Stop button of a start notification: only the timer's owner may press it."""
    entry_id = core.stop_button_entry_id(action)
    async with slack.db.sessions() as session:
        entry = await session.get(TimeEntry, entry_id) if entry_id else None
        running = await slack.timer.running(session, user.id)
    if entry is not None and entry.user_id != user.id:
        return core.reply_stop_refused()
    if entry is None or entry.end_time is not None or running is None or running.id != entry.id:
        return core.reply_stop_stale()
    try:
        stopped = await slack.timer.stop(user, entry_id=entry.id)
    except Conflict:
        return core.reply_stop_stale()
    project, task = await _names(slack, stopped)
    reply = core.reply_stopped(project, task, float(stopped["duration_seconds"] or 0))
    return {**reply, "replace_original": False}
