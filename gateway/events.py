"""In-process publish/subscribe for domain events; publishers never wait for subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Subscriber = Callable[[Any], Awaitable[None]]

TIMER_STARTED = "timer.started"
TIMER_STOPPED = "timer.stopped"


class EventBus:
    """Fire-and-forget delivery: each subscriber runs in its own task, failures are logged.

    Tasks are tracked so shutdown can wait for them (`drain`) instead of dropping them.
    """

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, list[Subscriber]] = defaultdict(list)
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, event: str, subscriber: Subscriber) -> None:
        self._subscribers[event].append(subscriber)

    def publish(self, event: str, payload: Any) -> None:
        for subscriber in self._subscribers.get(event, ()):
            task = asyncio.get_running_loop().create_task(self._run(event, subscriber, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, event: str, subscriber: Subscriber, payload: Any) -> None:
        try:
            await subscriber(payload)
        except Exception:
            name = getattr(subscriber, "__qualname__", repr(subscriber))
            log.exception("subscriber %s of %s failed", name, event)

    async def drain(self, grace: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
