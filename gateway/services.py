"""The gateway's services and connectors, built from settings without any web routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from aiohttp import web

from gateway import __version__
from gateway.connectors.base import Connector, ConnectorDeps
from gateway.connectors.http import TIMEOUT_SECONDS, HttpClient
from gateway.connectors.jobs import IntegrationJobRunner
from gateway.connectors.registry import PLUGINS
from gateway.connectors.webhooks import WebhookPipeline
from gateway.crypto import SecretBox, load_or_create_primary_key
from gateway.db.database import Database
from gateway.db.resilience import outbound_trace
from gateway.events import EventBus
from gateway.metrics import Metrics
from gateway.outbox import TimerOutbox
from gateway.scheduler import Job, JobReport, Scheduler
from gateway.settings import Settings
from gateway.timer.service import TimerService
from gateway.timeutil import Clock, utcnow

SessionFactory = Callable[[], aiohttp.ClientSession]


def default_http_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"User-Agent": f"tt-gateway/{__version__}"},
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
        # Marks a request that called out, so a dead database connection never retries it.
        trace_configs=[outbound_trace()],
    )


def open_database(settings: Settings) -> tuple[Database, SecretBox]:
    """What the database-only commands need (migrate, users, rotate-keys)."""
    primary, _source = load_or_create_primary_key(
        settings.encryption_key, settings.encryption_key_file, settings.data_dir
    )
    secrets = SecretBox(primary, settings.encryption_old_keys)
    db = Database(
        settings.database_url,
        env_tz=settings.tz,
        job_concurrency=settings.sync_concurrency,
        timeout=settings.db_timeout,
    )
    return db, secrets


@dataclass
class Services:
    """Everything connectors are built with; resources are opened by `running()`."""

    settings: Settings
    db: Database
    secrets: SecretBox
    metrics: Metrics
    events: EventBus
    outbox: TimerOutbox
    timer: TimerService
    scheduler: Scheduler
    http: HttpClient
    runner: IntegrationJobRunner
    pipeline: WebhookPipeline
    clock: Clock
    http_session_factory: SessionFactory = default_http_session
    connectors: dict[str, Connector] = field(default_factory=dict)

    @property
    def deps(self) -> ConnectorDeps:
        return ConnectorDeps(
            settings=self.settings,
            db=self.db,
            secrets=self.secrets,
            http=self.http,
            timer=self.timer,
            clock=self.clock,
        )

    @asynccontextmanager
    async def running(
        self,
        *,
        dispatch_events: bool,
        drain_grace: Callable[[], float] = lambda: 10.0,
    ) -> AsyncIterator[None]:
        """Database checks, the HTTP client and (optionally) the event dispatcher, then teardown."""
        await self.db.inspect_optional_tables()
        self.http.attach(self.http_session_factory())
        if dispatch_events:
            await self.outbox.start()
        try:
            yield
        finally:
            if dispatch_events:
                await self.outbox.stop()
            # In-flight notifications finish before the client closes, within the grace left.
            await self.events.drain(grace=drain_grace())
            await self.http.close()
            await self.db.dispose()


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def build_services(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    http_session_factory: SessionFactory | None = None,
) -> Services:
    """Services and every connector (with its jobs), no routes: for `serve` and `run-job`."""
    db, secrets = open_database(settings)
    metrics = Metrics()
    events = EventBus()
    outbox = TimerOutbox(
        db,
        clock=clock,
        max_age=timedelta(seconds=settings.event_max_age),
        lease=timedelta(seconds=settings.event_lease),
    )
    timer = TimerService(db, events, outbox, clock=clock)
    services = Services(
        settings=settings,
        db=db,
        secrets=secrets,
        metrics=metrics,
        events=events,
        outbox=outbox,
        timer=timer,
        scheduler=Scheduler(db, metrics),
        http=HttpClient(None, metrics),
        runner=IntegrationJobRunner(settings.sync_concurrency),
        pipeline=WebhookPipeline(db, secrets, metrics, wall_clock=lambda: clock().timestamp()),
        clock=clock,
        http_session_factory=http_session_factory or default_http_session,
    )
    services.scheduler.register(
        Job(PRUNE_EVENTS_JOB, "41 3 * * *", _prune_events(outbox), "forget handled timer events")
    )
    services.scheduler.register(
        Job(
            PRUNE_DELIVERIES_JOB,
            "23 3 * * *",
            _prune_deliveries(services.pipeline),
            "forget webhook delivery ids older than 14 days",
        )
    )
    for plugin in PLUGINS:
        connector = plugin.build(services)
        services.connectors[connector.slug] = connector
    return services


PRUNE_EVENTS_JOB = "timer_events_prune"
PRUNE_DELIVERIES_JOB = "webhook_deliveries_prune"


def _prune_deliveries(pipeline: WebhookPipeline) -> Callable[[], Awaitable[JobReport]]:
    async def prune() -> JobReport:
        removed = await pipeline.deliveries.prune()
        return JobReport(job=PRUNE_DELIVERIES_JOB, succeeded=1, detail={"removed": removed})

    return prune


def _prune_events(outbox: TimerOutbox) -> Callable[[], Awaitable[JobReport]]:
    async def prune() -> JobReport:
        removed = await outbox.prune()
        return JobReport(job=PRUNE_EVENTS_JOB, succeeded=1, detail={"removed": removed})

    return prune
