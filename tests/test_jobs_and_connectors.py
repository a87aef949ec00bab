"""The scheduler and the connector base: per-user isolation, no overlap, locked config writes."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from gateway import keys
from gateway.connectors.base import NOT_CONFIGURED, IntegrationStore
from gateway.db.models import Integration
from gateway.errors import NotConfigured
from gateway.scheduler import Job, JobReport


@pytest.fixture
async def ready_app(app):  # type: ignore[no-untyped-def]
    await app[keys.DB].inspect_optional_tables()
    yield app
    await app[keys.DB].dispose()


def store_for(app, provider: str = "test_connector") -> IntegrationStore:  # type: ignore[no-untyped-def]
    return IntegrationStore(app[keys.DB], app[keys.SECRETS], provider, "Test", ["api_token"])


async def test_scheduler_runs_never_overlap(ready_app) -> None:
    scheduler = ready_app[keys.SCHEDULER]
    gate = asyncio.Event()
    runs = 0

    async def slow() -> JobReport:
        nonlocal runs
        runs += 1
        await gate.wait()
        return JobReport(job="slow", succeeded=1)

    scheduler.register(Job("slow", "*/30 * * * *", slow))
    first = asyncio.create_task(scheduler.run("slow"))
    await asyncio.sleep(0.05)
    second = await scheduler.run("slow")
    assert second.outcome == "skipped"
    gate.set()
    assert (await first).outcome == "success"
    assert runs == 1
    metrics = ready_app[keys.METRICS].render().decode()
    assert 'gateway_job_runs_total{job="slow",outcome="skipped"} 1.0' in metrics
    assert 'gateway_job_runs_total{job="slow",outcome="success"} 1.0' in metrics


async def test_scheduler_counts_errors_and_unknown_jobs(ready_app) -> None:
    scheduler = ready_app[keys.SCHEDULER]

    async def broken() -> JobReport:
        raise RuntimeError("no database")

    scheduler.register(Job("broken", "0 * * * *", broken))
    with pytest.raises(RuntimeError):
        await scheduler.run("broken")
    with pytest.raises(KeyError):
        await scheduler.run("missing")
    with pytest.raises(ValueError):
        scheduler.register(Job("broken", "0 * * * *", broken))
    assert 'job="broken",outcome="error"' in ready_app[keys.METRICS].render().decode()


async def test_scheduler_starts_crons_in_utc_inside_the_loop(ready_app) -> None:
    scheduler = ready_app[keys.SCHEDULER]

    async def job() -> JobReport:
        return JobReport(job="j")

    scheduler.register(Job("j", "*/17 * * * *", job))
    scheduler.start()
    try:
        assert len(scheduler._crons) == len(scheduler.jobs)  # the connectors' jobs and ours
        mine = [c for c in scheduler._crons if c.spec == "*/17 * * * *"]
        assert len(mine) == 1
        assert str(mine[0].tz) == "UTC"
        assert all(c.handle is not None for c in scheduler._crons)
    finally:
        await scheduler.stop()
    assert scheduler._crons == []


async def test_get_or_create_is_race_free(ready_app, made) -> None:
    user = await made.user()
    store = store_for(ready_app)
    rows = await asyncio.gather(*(store.get_or_create(user.id) for _ in range(10)))
    assert len({r.id for r in rows}) == 1
    async with ready_app[keys.DB].sessions() as s:
        count = (await s.execute(select(func.count()).select_from(Integration))).scalar()
    assert count == 1
    assert rows[0].is_active is False and rows[0].name == "Test"


async def test_require_active_answers_not_configured(ready_app, made) -> None:
    user = await made.user()
    store = store_for(ready_app)
    with pytest.raises(NotConfigured) as info:
        await store.require_active(user.id)
    assert info.value.payload() == NOT_CONFIGURED
    row = await store.get_or_create(user.id)
    with pytest.raises(NotConfigured):
        await store.require_active(user.id)  # a row, but inactive

    async def activate(r, c, session) -> None:  # type: ignore[no-untyped-def]
        r.is_active = True

    await store.update(row.id, activate)
    assert (await store.require_active(user.id)).id == row.id


async def test_locked_updates_never_lose_a_write(ready_app, made) -> None:
    """A sync job and a settings save touching different keys at once both land."""
    user = await made.user()
    store = store_for(ready_app)
    row = await store.get_or_create(user.id)

    def setter(key: str):  # type: ignore[no-untyped-def]
        async def mutate(r, config, session) -> None:  # type: ignore[no-untyped-def]
            config.set(key, config.get(key, 0) + 1)

        return mutate

    await asyncio.gather(*(store.update(row.id, setter(f"k{i % 4}")) for i in range(20)))
    final = await store.get(row.id)
    assert final.config == {"k0": 5, "k1": 5, "k2": 5, "k3": 5}


async def test_secrets_are_encrypted_in_the_row(ready_app, made) -> None:
    user = await made.user()
    store = store_for(ready_app)
    row = await store.get_or_create(user.id)
    async def put(r, c, session) -> None:  # type: ignore[no-untyped-def]
        c.set_secret("api_token", "ghp_supersecretvalue123")

    await store.update(row.id, put)
    async with ready_app[keys.DB].engine.connect() as conn:
        raw = (await conn.exec_driver_sql("SELECT config FROM integrations")).scalar()
    assert "ghp_supersecretvalue123" not in str(raw)
    assert "enc:v1:" in str(raw)
    fresh = await store.get(row.id)
    assert store.config(fresh).secret("api_token") == "ghp_supersecretvalue123"


async def test_record_sync_writes_naive_utc(ready_app, made) -> None:
    user = await made.user()
    store = store_for(ready_app)
    row = await store.get_or_create(user.id)
    await store.record_sync(row.id, "error", "x" * 5000)
    fresh = await store.get(row.id)
    assert fresh.last_sync_status == "error"
    assert len(fresh.last_error) == 2000
    assert fresh.last_sync_at.tzinfo is None
    with pytest.raises(ValueError):
        await store.record_sync(row.id, "weird")


async def test_record_sync_sets_config_keys_and_never_loses_a_change(ready_app, made) -> None:
    """The outcome and its config keys land together; a change made since the caller read the
    config (a token refresh, a settings save) is kept, whichever way the write goes."""
    db = ready_app[keys.DB]
    user = await made.user()
    store = store_for(ready_app)
    row = await store.get_or_create(user.id)

    async def put(r, c, session) -> None:  # type: ignore[no-untyped-def]
        c.set("calendar", "primary")
        c.set_secret("api_token", "ghp_first")

    row, _ = await store.update(row.id, put)
    seen = dict(row.config)
    transactions = 0
    write_transaction = db.write_transaction

    def counting():  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += 1
        return write_transaction()

    db.write_transaction = counting
    try:
        # Unchanged since it was read: one compare-and-set statement, no locked transaction.
        await store.record_sync(row.id, "success", config={"last_sync_at": "t1"}, seen=seen)
        assert transactions == 0
        fresh = await store.get(row.id)
        assert fresh.last_sync_status == "success" and fresh.last_error is None
        assert fresh.config["last_sync_at"] == "t1" and fresh.config["calendar"] == "primary"
        assert store.config(fresh).secret("api_token") == "ghp_first"

        async def change(r, c, session) -> None:  # type: ignore[no-untyped-def]
            c.set("calendar", "team")
            c.set_secret("api_token", "ghp_second")

        await store.update(row.id, change)
        transactions = 0
        # `seen` is stale now: the locked path, which keeps the change and adds the keys.
        await store.record_sync(row.id, "partial", "one event failed",
                                config={"last_sync_at": "t2"}, seen=seen)
        assert transactions == 1
    finally:
        db.write_transaction = write_transaction
    fresh = await store.get(row.id)
    assert fresh.last_sync_status == "partial" and fresh.last_error == "one event failed"
    assert fresh.config["last_sync_at"] == "t2" and fresh.config["calendar"] == "team"
    assert store.config(fresh).secret("api_token") == "ghp_second"


@pytest.mark.postgres
async def test_record_sync_in_one_statement_on_timetrackers_json_column(ready_app, made) -> None:
    """TimeTracker's own integrations.config is `json`, which has no `=` operator: the
    compare-and-set compares it as jsonb (the suite's schema has jsonb there)."""
    db = ready_app[keys.DB]
    async with db.engine.begin() as conn:
        was = (
            await conn.exec_driver_sql(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'integrations' AND column_name = 'config'"
            )
        ).scalar_one()
        await conn.exec_driver_sql("ALTER TABLE integrations ALTER COLUMN config TYPE json")
    write_transaction = db.write_transaction
    transactions = 0

    def counting():  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += 1
        return write_transaction()

    try:
        user = await made.user()
        store = store_for(ready_app)
        row = await store.get_or_create(user.id)

        async def put(r, c, session) -> None:  # type: ignore[no-untyped-def]
            c.set("calendar", "primary")

        row, _ = await store.update(row.id, put)
        db.write_transaction = counting
        await store.record_sync(
            row.id, "success", config={"last_sync_at": "t1"}, seen=dict(row.config)
        )
        assert transactions == 0  # the one statement matched: no locked fallback
        fresh = await store.get(row.id)
        assert fresh.last_sync_status == "success"
        assert fresh.config["last_sync_at"] == "t1" and fresh.config["calendar"] == "primary"
    finally:
        db.write_transaction = write_transaction
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(  # back as the session's database had it
                f"ALTER TABLE integrations ALTER COLUMN config TYPE {was} USING config::{was}"
            )


async def test_rotate_keys_rewraps_plaintext_and_old_keys(ready_app, made) -> None:
    from cryptography.fernet import Fernet

    from gateway.crypto import SecretBox
    from gateway.rotation import rotate_all

    user = await made.user()
    db = ready_app[keys.DB]
    old_key = Fernet.generate_key().decode()
    old_value = SecretBox(old_key).encrypt("xoxb-old-key-value")
    async with db.sessions() as s:
        s.add(
            Integration(
                name="Slack",
                provider="slack_connector",
                user_id=user.id,
                is_active=True,
                config={
                    "bot_token": old_value,
                    "signing_secret": "legacy-plain",
                    "channel_id": "C1",
                },
            )
        )
        await s.commit()
    primary = Fernet.generate_key().decode()
    box = SecretBox(primary, (old_key,))
    assert await rotate_all(db, box) == (1, 2)
    async with db.sessions() as s:
        config = (await s.execute(select(Integration.config))).scalar()
    only_primary = SecretBox(primary)
    assert only_primary.decrypt(config["bot_token"]) == "xoxb-old-key-value"
    assert only_primary.decrypt(config["signing_secret"]) == "legacy-plain"
    assert config["signing_secret"].startswith("enc:v1:")
    assert config["channel_id"] == "C1"
    assert await rotate_all(db, box) == (0, 0)


async def test_a_cron_slot_runs_once_whatever_the_replicas(settings) -> None:
    from datetime import UTC, datetime

    from gateway.app import create_app

    apps = [create_app(settings), create_app(settings)]  # two replicas, one database
    runs: list[int] = []
    for index, app in enumerate(apps):
        await app[keys.DB].inspect_optional_tables()

        async def job(index: int = index) -> JobReport:
            runs.append(index)
            return JobReport(job="every_half_hour", succeeded=1)

        app[keys.SCHEDULER].register(Job("every_half_hour", "*/30 * * * *", job))
    try:
        late = datetime(2026, 12, 1, 10, 30, 4, tzinfo=UTC)  # a tick 4 s late still names 10:30
        slot = apps[0][keys.SCHEDULER].slot_of("every_half_hour", late)
        assert slot == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
        first = await apps[0][keys.SCHEDULER].run("every_half_hour", slot=slot)
        second = await apps[1][keys.SCHEDULER].run("every_half_hour", slot=slot)
        assert (first.outcome, second.outcome) == ("success", "skipped")
        following = apps[0][keys.SCHEDULER].slot_of(
            "every_half_hour", datetime(2026, 12, 1, 11, 0, 0, 200_000, tzinfo=UTC)
        )
        assert (await apps[1][keys.SCHEDULER].run("every_half_hour", slot=following)).outcome == (
            "success"
        )
        assert runs == [0, 1]
        manual = await apps[1][keys.SCHEDULER].run("every_half_hour")  # run-job: no slot
        assert manual.outcome == "success" and runs == [0, 1, 1]
    finally:
        for app in apps:
            await app[keys.DB].dispose()
