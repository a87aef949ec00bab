"""What each GitHub `issues` action does to TimeTracker, routed by (event, action)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from gateway.connectors.github import core
from gateway.connectors.github.tasks import TASKS, TaskChange
from gateway.connectors.webhooks import Delivery
from gateway.db.models import Task

if TYPE_CHECKING:
    from gateway.connectors.github.service import GitHubConnector

router = core.Router()


def _record(delivery: Delivery, change: TaskChange) -> None:
    delivery.answer.update(task=change.action, task_id=change.task_id)
    if change.reason:
        delivery.answer["reason"] = change.reason


def _issue(delivery: Delivery) -> core.Issue:
    issue: core.Issue = delivery.event.issue
    return issue


@router.register("issues", "opened")
async def opened(gh: GitHubConnector, delivery: Delivery) -> None:
    # A new task starts as todo; an existing one keeps the status people gave it.
    _record(delivery, await gh.upsert(delivery, create=True))


@router.register("issues", "reopened")
async def reopened(gh: GitHubConnector, delivery: Delivery) -> None:
    _record(delivery, await gh.upsert(delivery, create=True, status="todo"))


@router.register("issues", "edited")
@router.register("issues", "labeled")
@router.register("issues", "unlabeled")
async def changed(gh: GitHubConnector, delivery: Delivery) -> None:
    # An open issue that was never a task (older than the connector, or newly matching the
    # label filter) becomes one; a closed one only updates an existing task.
    _record(delivery, await gh.upsert(delivery, create=_issue(delivery).state == "open"))


@router.register("issues", "closed")
async def closed(gh: GitHubConnector, delivery: Delivery) -> None:
    _record(delivery, await gh.upsert(delivery, create=False, status="done"))


@router.register("issues", "deleted")
async def deleted(gh: GitHubConnector, delivery: Delivery) -> None:
    _record(delivery, await gh.upsert(delivery, create=False, status="cancelled"))


@router.register("issues", "assigned")
async def assigned(gh: GitHubConnector, delivery: Delivery) -> None:
    session = delivery.session
    assert session is not None  # not a single write: always in the pipeline's transaction
    change = await gh.upsert(delivery, create=_issue(delivery).state == "open")
    _record(delivery, change)
    if change.task_id is None:
        return
    login = delivery.event.assignee_login
    user = await gh.linked_user(session, login)
    if user is None:
        delivery.answer["assignee"] = f"no TimeTracker user has GitHub login {login!r}"
        return
    now = await gh.task_now(session)
    await session.execute(
        update(TASKS)
        .where(TASKS.c.id == change.task_id, TASKS.c.assigned_to.is_distinct_from(user.id))
        .values(assigned_to=user.id, updated_at=now)
    )
    delivery.answer["assigned_to"] = user.id
    config = delivery.candidate.config
    if not config.get("auto_start_timer"):
        delivery.answer["timer"] = "not started: auto-start is off"
        return
    task_id = change.task_id

    async def start() -> None:  # after the commit: the timer service has its own transaction
        delivery.answer["timer"] = await gh.auto_start(config, user, task_id)

    delivery.after_commit.append(start)


@router.register("issues", "unassigned")
async def unassigned(gh: GitHubConnector, delivery: Delivery) -> None:
    session = delivery.session
    assert session is not None
    project_id: Any = delivery.candidate.config.get("default_project_id")
    ref = core.external_ref(_issue(delivery).number)
    task = (
        await session.execute(
            select(Task)
            .where(Task.project_id == project_id, Task.external_ref == ref)
            .order_by(Task.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    if task is None:
        delivery.answer.update(task="skipped", reason="no task for this issue")
        return
    user = await gh.linked_user(session, delivery.event.assignee_login)
    delivery.answer.update(task="unchanged", task_id=task.id)
    if user is not None and task.assigned_to == user.id:
        task.assigned_to = None
        task.updated_at = await gh.task_now(session)
        delivery.answer["task"] = "updated"


# Actions whose whole effect is one task upsert: on PostgreSQL they record the delivery in the
# same single statement (the webhook hot path); the others run in the pipeline's transaction.
SINGLE_WRITE = frozenset({opened, reopened, changed, closed, deleted})
