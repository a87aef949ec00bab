"""Cron jobs: a registry, UTC aiocron schedules, one run at a time across replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiocron
from cronsim import CronSim
from sqlalchemy import delete

from gateway.db.database import Database
from gateway.db.models import JobSlot
from gateway.metrics import Metrics
from gateway.timeutil import utcnow_naive

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class JobReport:
    """What one run did. `failed` users were recorded on their own integrations."""

    job: str
    outcome: str = "success"  # success, partial, error, skipped
    succeeded: int = 0
    failed: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


JobFunc = Callable[[], Awaitable[JobReport]]


@dataclass(frozen=True)
class Job:
    name: str
    spec: str  # cron expression, evaluated in UTC
    func: JobFunc
    description: str = ""


SLOT_RETENTION = timedelta(days=7)


class UnknownJob(KeyError):
    pass


class Scheduler:
    def __init__(self, db: Database, metrics: Metrics) -> None:
        self.db = db
        self.metrics = metrics
        self.jobs: dict[str, Job] = {}
        self._crons: list[aiocron.Cron] = []

    def register(self, job: Job) -> None:
        if job.name in self.jobs:
            raise ValueError(f"job {job.name!r} registered twice")
        self.jobs[job.name] = job

    async def run(self, name: str, slot: datetime | None = None) -> JobReport:
        """Run a job now unless a run of it is under way here or in another process.

        With a `slot` (a cron tick's scheduled time) the run also claims that slot in the
        database first: a replica whose tick comes late, after another replica finished the
        same slot, skips it. `run-job` passes none and always runs.
        """
        job = self.jobs.get(name)
        if job is None:
            raise UnknownJob(name)
        async with self.db.try_session_lock("job", name) as acquired:
            if not acquired or (slot is not None and not await self._claim(name, slot)):
                why = "a run is already under way" if not acquired else "its slot already ran"
                log.info("job %s skipped: %s", name, why)
                self.metrics.job_runs.labels(name, "skipped").inc()
                return JobReport(job=name, outcome="skipped")
            try:
                report = await job.func()
            except Exception:
                log.exception("job %s failed", name)
                self.metrics.job_runs.labels(name, "error").inc()
                raise
        self.metrics.job_runs.labels(name, report.outcome).inc()
        if report.failed:
            self.metrics.job_user_failures.labels(name).inc(report.failed)
        log.info(
            "job %s: %s (%d ok, %d failed)", name, report.outcome, report.succeeded, report.failed
        )
        return report

    async def _claim(self, name: str, slot: datetime) -> bool:
        """Record (job, slot) once; False when a replica has run that slot already."""
        slot = slot.astimezone(UTC).replace(tzinfo=None)
        async with self.db.write_transaction() as session:
            result = await session.execute(
                self.db.insert(JobSlot)
                .values(job=name, slot=slot, claimed_at=utcnow_naive())
                .on_conflict_do_nothing(index_elements=["job", "slot"])
            )
            await session.execute(  # the table stays small: a week of slots
                delete(JobSlot).where(JobSlot.job == name, JobSlot.slot < slot - SLOT_RETENTION)
            )
            await session.commit()
        return bool(result.rowcount)

    def slot_of(self, name: str, now: datetime) -> datetime:
        """The scheduled time of the tick that fires at `now` (a tick may fire a little late)."""
        spec = self.jobs[name].spec
        return next(CronSim(spec, now.astimezone(UTC) + timedelta(seconds=1), reverse=True))

    async def _tick(self, name: str) -> None:
        try:
            await self.run(name, slot=self.slot_of(name, datetime.now(UTC)))
        except Exception:  # already logged and counted; a cron tick must not raise into aiocron
            return

    def start(self) -> None:
        """Create the cron schedules (UTC) inside the app lifecycle; nothing runs at import."""
        loop = asyncio.get_running_loop()
        for job in self.jobs.values():
            cron = aiocron.Cron(
                job.spec, self._tick, args=(job.name,), start=False, tz=UTC, loop=loop
            )
            cron.start()
            self._crons.append(cron)
            log.info("scheduled %s at '%s' UTC", job.name, job.spec)

    async def stop(self) -> None:
        for cron in self._crons:
            cron.stop()
        self._crons.clear()
