"""The issue→task write: one plan, two executors (PL/pgSQL on PostgreSQL, Python on SQLite)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.connectors.github import core
from gateway.db.database import Database, lock_key
from gateway.db.models import Task

TASKS = Task.__table__
TASK_LOCK = "github-task"  # advisory lock namespace of (project, issue)


@dataclass
class TaskChange:
    """What an upsert did to the task of one issue."""

    action: str  # created, updated, unchanged, skipped
    task_id: int | None = None
    reason: str | None = None


# What the executors report (see migration 157), and the answer each one gives.
_SKIP_REASONS = {"missing": "no task for this issue", "filtered": "label filter"}


def task_change(outcome: str, task_id: int | None) -> TaskChange:
    if outcome in _SKIP_REASONS:
        return TaskChange("skipped", reason=_SKIP_REASONS[outcome])
    return TaskChange(outcome, task_id)


@dataclass(frozen=True)
class TaskPlan:
    """Everything an upsert of an issue's task may write, decided once for both executors."""

    project_id: int
    external_ref: str
    lock_key: int
    create: bool
    filter_ok: bool
    status: str | None
    name: str
    description: str
    priority: str
    completed_at: datetime | None
    created_by: int
    now: datetime

    def params(
        self, delivery_key: str | None, integration_id: int | None, received_at: datetime | None
    ) -> dict[str, Any]:
        """The arguments of gateway_github_task_upsert, in its order."""
        return {
            "provider": "github",
            "delivery_id": delivery_key,
            "integration_id": integration_id,
            "received_at": received_at,
            "lock_key": self.lock_key,
            "project_id": self.project_id,
            "external_ref": self.external_ref,
            "create": self.create,
            "filter_ok": self.filter_ok,
            "status": self.status,
            "name": self.name,
            "description": self.description,
            "priority": self.priority,
            "completed_at": self.completed_at,
            "created_by": self.created_by,
            "now": self.now,
        }


def plan_task(
    config: Any,
    created_by: int,
    issue: core.Issue,
    *,
    create: bool,
    status: str | None,
    now: datetime,
) -> TaskPlan:
    """The plan of an upsert from the integration's config (a Config or a mapping)."""
    project_id = config.get("default_project_id")
    ref = core.external_ref(issue.number)
    return TaskPlan(
        project_id=project_id,
        external_ref=ref,
        lock_key=lock_key(TASK_LOCK, project_id, ref),
        create=create,
        filter_ok=core.matches_label_filter(issue.labels, config.get("label_filter")),
        status=status,
        name=core.task_name(issue),
        description=core.task_description(issue),
        priority=core.priority_for(issue.labels, config.get("priority_labels") or {}),
        completed_at=now if status == "done" else None,
        created_by=created_by,
        now=now,
    )


# -- executor 1: the gateway_github_task_upsert function (migration 157, PostgreSQL) --------------

_ARGS = (
    "provider delivery_id integration_id received_at lock_key project_id external_ref create "
    "filter_ok status name description priority completed_at created_by now"
).split()
UPSERT_FUNCTION = text(
    "SELECT outcome, task_id FROM gateway_github_task_upsert(:provider, :delivery_id, "
    ":integration_id, :received_at, :lock_key, :project_id, :external_ref, :create, "
    ":filter_ok, :status, :name, :description, :priority, :completed_at, :created_by, :now)"
)
UPSERT_FUNCTION_DRIVER_SQL = (
    "SELECT outcome, task_id FROM gateway_github_task_upsert("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
)


class FunctionExecutor:
    """PostgreSQL: lookup and write in one function call; it can also record the delivery."""

    atomic_claims = True  # `claiming` records the delivery key in the same statement

    def __init__(self, db: Database) -> None:
        self.db = db

    async def in_session(self, session: AsyncSession, plan: TaskPlan) -> TaskChange:
        """Inside the caller's transaction (the delivery, if any, was recorded by the caller)."""
        outcome, task_id = (await session.execute(UPSERT_FUNCTION, plan.params(None, None, None))).one()
        return task_change(outcome, task_id)

    async def claiming(
        self, conn: Any, plan: TaskPlan, key: str | None, integration_id: int, received_at: datetime
    ) -> TaskChange | None:
        """On an autocommit driver connection: record the key and upsert as one transaction.

        None when the key was recorded before (a redelivery).
        """
        params = plan.params(key, integration_id, received_at)
        outcome, task_id = await conn.fetchrow(
            UPSERT_FUNCTION_DRIVER_SQL, *[params[name] for name in _ARGS]
        )
        return None if outcome == "duplicate" else task_change(outcome, task_id)


# -- executor 2: Python, the same steps (SQLite; any database) ----------------------------------


class PythonExecutor:
    """The function's steps in Python, under the database's transaction lock."""

    atomic_claims = False

    def __init__(self, db: Database) -> None:
        self.db = db

    async def in_session(self, session: AsyncSession, plan: TaskPlan) -> TaskChange:
        async with self.db.xact_lock(session, TASK_LOCK, plan.project_id, plan.external_ref):
            outcome, task_id = await _upsert(await session.connection(), plan)
        return task_change(outcome, task_id)


async def _upsert(conn: Any, plan: TaskPlan) -> tuple[str, int | None]:
    """Mirrors migration 157's function; the caller holds the lock."""
    current = (
        await conn.execute(
            select(TASKS.c.id, TASKS.c.name, TASKS.c.description, TASKS.c.priority, TASKS.c.status)
            .where(TASKS.c.project_id == plan.project_id, TASKS.c.external_ref == plan.external_ref)
            .order_by(TASKS.c.id)
            .limit(1)
        )
    ).first()
    fields: dict[str, Any] = {
        "name": plan.name,
        "description": plan.description,
        "priority": plan.priority,
    }
    if current is None:
        if not plan.create:
            return "missing", None
        if not plan.filter_ok:
            return "filtered", None
        task_id = (
            await conn.execute(
                insert(TASKS)
                .values(
                    project_id=plan.project_id,
                    status=plan.status or "todo",
                    created_by=plan.created_by,
                    created_at=plan.now,
                    updated_at=plan.now,
                    completed_at=plan.completed_at,
                    external_ref=plan.external_ref,
                    **fields,
                )
                .returning(TASKS.c.id)
            )
        ).scalar_one()
        return "created", task_id
    if plan.status is not None and current.status != plan.status:
        fields.update(status=plan.status, completed_at=plan.completed_at)
    if all(getattr(current, k) == v for k, v in fields.items() if k != "completed_at"):
        return "unchanged", current.id
    await conn.execute(
        update(TASKS).where(TASKS.c.id == current.id).values(updated_at=plan.now, **fields)
    )
    return "updated", current.id


Executor = FunctionExecutor | PythonExecutor
# The one place the dialect picks the executor; the connector code has no dialect branches.
EXECUTORS: dict[str, type[FunctionExecutor] | type[PythonExecutor]] = {
    "postgresql": FunctionExecutor,
    "sqlite": PythonExecutor,
}


def executor_for(db: Database) -> Executor:
    return EXECUTORS[db.dialect](db)
