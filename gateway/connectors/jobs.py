"""One runner for per-integration work: bounded concurrency, isolation, time limits, records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.connectors.base import Connector
from gateway.db.models import Integration
from gateway.logs import redact
from gateway.scheduler import Job, JobReport

log = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT = 120.0  # seconds one integration's work may take in a scheduled run
ERRORS_SHOWN = 5


@dataclass
class SyncOutcome:
    """What one integration's work did; recorded as integrations.last_sync_*."""

    status: str  # success, partial, error
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # Plain config keys written with the outcome, in the same transaction (e.g. last_sync_at).
    config: dict[str, Any] = field(default_factory=dict)
    # The integration's config as the work last read it (else the runner's row's): while it is
    # still what is stored, the outcome is written in one compare-and-set statement.
    seen_config: dict[str, Any] | None = None

    @classmethod
    def from_counts(
        cls, touched: int, item_errors: list[str], fetch_error: str | None = None, **detail: Any
    ) -> SyncOutcome:
        """The status rules of a sync (GitHub's, Google's).

        A fetch that failed is an error when nothing was done, partial when some was; a fetch
        that went through is partial when some items failed, a success otherwise.
        """
        if fetch_error is not None:
            return cls("partial" if touched else "error", fetch_error, detail)
        error = "; ".join(item_errors[:ERRORS_SHOWN]) or None
        return cls("partial" if item_errors else "success", error, detail)


Work = Callable[[Integration], Awaitable[SyncOutcome]]


class IntegrationJobRunner:
    """Runs a connector's work for one or all of its active integrations.

    Each integration is worked on in its own task (so its own database sessions), under a
    time limit and a try/except; its outcome goes onto its own row. At most `concurrency`
    integrations run at once; the pool is sized for that (Database(job_concurrency=...)).
    """

    def __init__(self, concurrency: int, time_limit: float = DEFAULT_TIME_LIMIT) -> None:
        self.concurrency = max(concurrency, 1)
        self.time_limit = time_limit

    async def run_one(self, connector: Connector, row: Integration, work: Work) -> SyncOutcome:
        """One integration's work, never raising: failures become an `error` outcome."""
        try:
            async with asyncio.timeout(self.time_limit):
                outcome = await work(row)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            outcome = SyncOutcome("error", f"stopped after {int(self.time_limit)} s")
            log.warning("%s: integration %s: %s", connector.slug, row.id, outcome.error)
        except Exception as exc:
            log.warning(
                "%s: integration %s failed: %s",
                connector.slug,
                row.id,
                type(exc).__name__,
                exc_info=True,
            )
            outcome = SyncOutcome("error", f"{type(exc).__name__}: {exc}"[:500])
        else:
            if outcome.status == "error":  # a provider fault: said once per run, in the log too
                log.warning(
                    "%s: integration %s: %s", connector.slug, row.id, redact(outcome.error or "")
                )
        try:
            seen = outcome.seen_config if outcome.seen_config is not None else row.config
            await connector.store.record_sync(
                row.id, outcome.status, outcome.error, config=outcome.config, seen=seen
            )
        except Exception:  # the row may have gone; the outcome still counts in the report
            log.warning("%s: could not record the outcome of %s", connector.slug, row.id)
        return outcome

    async def run_all(
        self,
        job: str,
        connector: Connector,
        work: Work,
        *,
        eligible: Callable[[Integration], bool] = lambda row: True,
    ) -> JobReport:
        rows = [row for row in await connector.store.active_rows() if eligible(row)]
        semaphore = asyncio.Semaphore(self.concurrency)

        async def guarded(row: Integration) -> SyncOutcome:
            async with semaphore:
                return await self.run_one(connector, row, work)

        outcomes = await asyncio.gather(*(guarded(row) for row in rows))
        failed = sum(1 for o in outcomes if o.status == "error")
        partial = sum(1 for o in outcomes if o.status == "partial")
        succeeded = len(outcomes) - failed
        if failed == 0 and partial == 0:
            overall = "success"
        else:
            overall = "error" if succeeded == 0 else "partial"
        return JobReport(
            job=job,
            outcome=overall,
            succeeded=succeeded,
            failed=failed,
            detail={"integrations": len(rows), "partial": partial},
        )

    def job(
        self,
        name: str,
        spec: str,
        connector: Connector,
        work: Work,
        description: str = "",
        *,
        eligible: Callable[[Integration], bool] = lambda row: True,
    ) -> Job:
        """A scheduler Job that runs `work` for every eligible active integration."""

        async def run() -> JobReport:
            return await self.run_all(name, connector, work, eligible=eligible)

        return Job(name, spec, run, description)
