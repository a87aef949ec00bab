"""HTTP adapters for timers: /api/timer/{start,stop,status} and today's summary."""

from __future__ import annotations

from aiohttp import web

from gateway import keys
from gateway.auth.identity import principal_of, protected
from gateway.web.jsonio import ok, read_json_object

routes = web.RouteTableDef()


@routes.post("/api/timer/start", name="timer_start")
@protected("write:time_entries")
async def start(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    entry = await request.app[keys.TIMER].start(
        principal_of(request).user,
        body.get("project_id"),
        body.get("task_id"),
        body.get("notes"),
    )
    return ok(status=201, entry=entry)


@routes.post("/api/timer/stop", name="timer_stop")
@protected("write:time_entries")
async def stop(request: web.Request) -> web.Response:
    entry = await request.app[keys.TIMER].stop(principal_of(request).user)
    return ok(entry=entry)


@routes.get("/api/timer/status", name="timer_status")
@protected("read:time_entries")
async def status(request: web.Request) -> web.Response:
    entry = await request.app[keys.TIMER].status(principal_of(request).user)
    return ok(active=entry is not None, entry=entry)


@routes.get("/api/timer/today", name="timer_today")
@protected("read:time_entries")
async def today(request: web.Request) -> web.Response:
    summary = await request.app[keys.TIMER].today(principal_of(request).user)
    return ok(summary=summary.as_dict())


@routes.get("/api/projects", name="projects")
@protected("read:projects")
async def projects(request: web.Request) -> web.Response:
    """The active projects the caller may start timers on (the cards' project pickers)."""
    timer = request.app[keys.TIMER]
    user = principal_of(request).user
    async with request.app[keys.DB].sessions() as session:
        rows = (await session.execute(timer.usable_projects_query(user))).scalars().all()
    return ok(projects=[{"id": p.id, "name": p.name} for p in rows])
