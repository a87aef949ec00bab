"""Timers: TimeTracker's row conventions, one running timer per user, events, today's summary."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway import keys
from gateway.db.models import Client, TimeEntry, user_clients
from gateway.events import TIMER_STARTED, TIMER_STOPPED
from gateway.timer.service import rounded_duration


class FrozenClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **kwargs: float) -> None:
        self.moment += timedelta(**kwargs)


@pytest.fixture
def clock(app) -> FrozenClock:  # type: ignore[no-untyped-def]
    frozen = FrozenClock(datetime(2026, 3, 10, 8, 0, tzinfo=UTC))
    app[keys.TIMER].clock = frozen
    return frozen


@pytest.fixture
async def alice_token(made):  # type: ignore[no-untyped-def]
    user = await made.user("alice")
    return user, {"Authorization": "Bearer " + await made.token(user)}


async def test_start_stop_rows_follow_timetracker_conventions(
    client, made, app, clock, alice_token
) -> None:
    user, auth = alice_token
    await made.app_settings(timezone="Europe/Rome", rounding_minutes=5)
    project = await made.project(billable=False)
    task = await made.task(project, user, "Write docs")
    started = await client.post(
        "/api/timer/start",
        json={"project_id": project.id, "task_id": task.id, "notes": "docs"},
        headers=auth,
    )
    assert started.status == 201
    entry = (await started.json())["entry"]
    # 08:00 UTC is 09:00 wall time in Rome (CET, before the March DST change).
    assert entry["start_time"] == "2026-03-10T09:00:00"
    assert entry["end_time"] is None
    assert entry["source"] == "auto"
    assert entry["billable"] is False
    assert entry["task_id"] == task.id
    assert entry["notes"] == "docs"
    clock.advance(minutes=22, seconds=40)
    stopped = await client.post("/api/timer/stop", headers=auth)
    assert stopped.status == 200
    entry = (await stopped.json())["entry"]
    assert entry["end_time"] == "2026-03-10T09:22:40"
    assert entry["duration_seconds"] == 25 * 60  # 22m40s rounded to 5 minutes
    async with app[keys.DB].sessions() as s:
        row = (await s.execute(select(TimeEntry))).scalar_one()
    assert row.start_time.tzinfo is None and row.paid is False and row.source == "auto"


async def test_duration_counts_real_seconds_across_dst(client, made, clock, alice_token) -> None:
    _, auth = alice_token
    await made.app_settings(timezone="Europe/Rome")
    project = await made.project()
    clock.moment = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET; clocks jump at 02:00
    await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    clock.advance(hours=1)
    entry = (await (await client.post("/api/timer/stop", headers=auth)).json())["entry"]
    assert entry["start_time"] == "2026-03-29T01:30:00"
    assert entry["end_time"] == "2026-03-29T03:30:00"  # wall clock moved two hours
    assert entry["duration_seconds"] == 3600  # but one hour was worked


async def test_app_timezone_falls_back_to_env_tz(client, made, clock, alice_token) -> None:
    _, auth = alice_token  # no settings row; the fixture's TZ is UTC
    project = await made.project()
    entry = (
        await (
            await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
        ).json()
    )["entry"]
    assert entry["start_time"] == "2026-03-10T08:00:00"


async def test_second_start_conflicts_and_stop_without_timer_conflicts(
    client, made, clock, alice_token
) -> None:
    _, auth = alice_token
    project = await made.project()
    assert (await client.post("/api/timer/stop", headers=auth)).status == 409
    assert (
        await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    ).status == 201
    second = await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    assert second.status == 409
    assert (await second.json())["error"] == "A timer is already running"
    status = await (await client.get("/api/timer/status", headers=auth)).json()
    assert status["ok"] and status["active"] and status["entry"]["project_id"] == project.id


async def test_concurrent_starts_make_one_timer(client, made, app, clock, alice_token) -> None:
    user, auth = alice_token
    project = await made.project()
    responses = await asyncio.gather(
        *(
            client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
            for _ in range(12)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(201) == 1
    assert statuses.count(409) == 11
    async with app[keys.DB].sessions() as s:
        running = (
            (
                await s.execute(
                    select(TimeEntry).where(
                        TimeEntry.user_id == user.id, TimeEntry.end_time.is_(None)
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(running) == 1


@pytest.mark.postgres
async def test_concurrent_starts_from_two_gateways(settings, made, clock) -> None:
    """Two app instances (two replicas) against one PostgreSQL: still one running timer."""
    from gateway.app import create_app

    user = await made.user("bob")
    project = await made.project()
    apps = [create_app(settings), create_app(settings)]
    for a in apps:
        await a[keys.DB].inspect_optional_tables()
        a[keys.TIMER].clock = clock
    results = await asyncio.gather(
        *(a[keys.TIMER].start(user, project.id) for a in apps for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if isinstance(r, dict)) == 1
    assert all(type(r).__name__ == "Conflict" for r in results if not isinstance(r, dict))
    for a in apps:
        await a[keys.DB].dispose()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "project_id"),
        ({"project_id": "abc"}, "project_id"),
        ({"project_id": True}, "project_id"),
        ({"project_id": -3}, "project_id"),
        ({"project_id": 999999}, "project_id"),
        ({"project_id": "PROJECT", "notes": 5}, "notes"),
        ({"project_id": "PROJECT", "task_id": 999999}, "task_id"),
        ({"project_id": "ARCHIVED"}, "project_id"),
        ({"project_id": "INACTIVE"}, "project_id"),
        ({"project_id": "PROJECT", "task_id": "OTHER_TASK"}, "task_id"),
    ],
)
async def test_bad_start_requests_get_400_and_write_nothing(
    client, made, app, clock, alice_token, body, field
) -> None:
    user, auth = alice_token
    project = await made.project("Active")
    archived = await made.project("Old", status="archived")
    inactive = await made.project("Paused", status="inactive")
    other_task = await made.task(archived, user)
    names = {
        "PROJECT": project.id,
        "ARCHIVED": archived.id,
        "INACTIVE": inactive.id,
        "OTHER_TASK": other_task.id,
    }
    body = {k: names.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    response = await client.post("/api/timer/start", json=body, headers=auth)
    assert response.status == 400
    payload = await response.json()
    assert payload["ok"] is False and payload["field"] == field and payload["error"]
    async with app[keys.DB].sessions() as s:
        assert (await s.execute(select(TimeEntry))).first() is None


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"project_id=1", "text/plain", 415),
    ],
)
async def test_malformed_bodies_get_4xx(
    client, made, alice_token, raw, content_type, status
) -> None:
    _, auth = alice_token
    response = await client.post(
        "/api/timer/start", data=raw, headers={**auth, "Content-Type": content_type}
    )
    assert response.status == status
    assert (await response.json())["ok"] is False


async def test_oversized_body_gets_413(client, alice_token) -> None:
    _, auth = alice_token
    big = b'{"notes": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await client.post(
        "/api/timer/start", data=big, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["ok"] is False


async def test_client_restricted_user_sees_only_their_clients(
    client, made, app, clock, alice_token
) -> None:
    user, auth = alice_token
    db = app[keys.DB]
    async with db.sessions() as s:
        acme, other = Client(name="Acme"), Client(name="Other")
        s.add_all([acme, other])
        await s.commit()
    mine = await made.project("Mine", client_id=acme.id)
    theirs = await made.project("Theirs", client_id=other.id)
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: user_clients.create(c, checkfirst=True))
        await conn.execute(user_clients.insert().values(user_id=user.id, client_id=acme.id))
    try:
        await db.inspect_optional_tables()
        denied = await client.post("/api/timer/start", json={"project_id": theirs.id}, headers=auth)
        assert denied.status == 400 and (await denied.json())["field"] == "project_id"
        allowed = await client.post("/api/timer/start", json={"project_id": mine.id}, headers=auth)
        assert allowed.status == 201
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: user_clients.drop(c))


async def test_events_published_without_waiting(client, made, app, clock, alice_token) -> None:
    user, auth = alice_token
    project = await made.project("Site")
    seen: list = []
    release = asyncio.Event()

    async def slow_subscriber(event) -> None:  # type: ignore[no-untyped-def]
        await release.wait()  # a Slack outage: the timer must not wait for it
        seen.append(event)

    app[keys.EVENTS].subscribe(TIMER_STARTED, slow_subscriber)
    app[keys.EVENTS].subscribe(TIMER_STOPPED, slow_subscriber)
    response = await asyncio.wait_for(
        client.post("/api/timer/start", json={"project_id": project.id}, headers=auth), 5
    )
    assert response.status == 201
    assert seen == []
    release.set()
    await app[keys.EVENTS].drain()
    assert [e.kind for e in seen] == [TIMER_STARTED]
    assert seen[0].project_name == "Site" and seen[0].user_display_name == "alice"
    await client.post("/api/timer/stop", headers=auth)
    await app[keys.EVENTS].drain()
    assert [e.kind for e in seen] == [TIMER_STARTED, TIMER_STOPPED]
    assert seen[1].entry["duration_seconds"] == 0


async def test_failing_subscriber_does_not_break_timer(
    client, made, app, clock, alice_token, caplog
) -> None:
    _, auth = alice_token
    project = await made.project()

    async def broken(event) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("slack down")

    app[keys.EVENTS].subscribe(TIMER_STARTED, broken)
    assert (
        await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    ).status == 201
    await app[keys.EVENTS].drain()
    assert "failed" in caplog.text and "slack down" in caplog.text  # logged, not swallowed
    assert (await (await client.get("/api/timer/status", headers=auth)).json())["active"] is True


async def test_today_uses_the_users_timezone(app, made, clock) -> None:
    """Rome app time; a user in New York. TimeTracker's own summary mixes local and UTC bounds."""
    await made.app_settings(timezone="Europe/Rome")
    user = await made.user("nyc", timezone="America/New_York")
    project = await made.project("P")
    db = app[keys.DB]

    def wall(y, mo, d, h, mi=0):  # type: ignore[no-untyped-def]
        return datetime(y, mo, d, h, mi)

    async with db.sessions() as s:
        for start, end in [
            # 2026-03-10 in New York is 05:00 Mar 10 → 05:00 Mar 11 Rome wall time.
            (wall(2026, 3, 10, 4), wall(2026, 3, 10, 5, 30)),  # 30 min inside (from 05:00)
            (wall(2026, 3, 10, 14), wall(2026, 3, 10, 16)),  # 2 h inside
            (wall(2026, 3, 11, 4), wall(2026, 3, 11, 6)),  # 1 h inside (until 05:00)
            (wall(2026, 3, 11, 6), wall(2026, 3, 11, 7)),  # the next NY day: outside
        ]:
            s.add(
                TimeEntry(
                    user_id=user.id,
                    project_id=project.id,
                    start_time=start,
                    end_time=end,
                    duration_seconds=int((end - start).total_seconds()),
                    source="manual",
                    billable=True,
                    paid=False,
                    created_at=start,
                    updated_at=end,
                )
            )
        await s.commit()
    app[keys.TIMER].clock = FrozenClock(datetime(2026, 3, 10, 23, 0, tzinfo=UTC))  # 19:00 NY
    summary = await app[keys.TIMER].today(user)
    assert summary.day == "2026-03-10"
    assert summary.total_seconds == 30 * 60 + 2 * 3600 + 3600
    assert summary.entries == 3
    assert summary.projects == [{"name": "P", "seconds": summary.total_seconds}]


async def test_today_endpoint_counts_a_running_timer(client, made, clock, alice_token) -> None:
    _, auth = alice_token
    project = await made.project()
    await client.post("/api/timer/start", json={"project_id": project.id}, headers=auth)
    clock.advance(minutes=90)
    body = await (await client.get("/api/timer/today", headers=auth)).json()
    assert body["summary"]["total_seconds"] == 5400
    assert body["summary"]["running"] is True


@pytest.mark.parametrize(
    ("seconds", "minutes", "expected"),
    [(0, 1, 0), (61, 1, 61), (449, 15, 0), (451, 15, 900), (1349, 15, 900), (-5, 5, 0)],
)
def test_rounding(seconds: int, minutes: int, expected: int) -> None:
    assert rounded_duration(seconds, minutes) == expected


async def test_projects_lists_only_usable_ones(client, made, alice_token) -> None:
    _, auth = alice_token
    active = await made.project("Active")
    await made.project("Archived", status="archived")
    body = await (await client.get("/api/projects", headers=auth)).json()
    assert body == {"ok": True, "projects": [{"id": active.id, "name": "Active"}]}
