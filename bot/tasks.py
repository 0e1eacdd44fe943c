"""Owned background tasks: named, referenced until done, and their deaths logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskGroup:
    """Keeps a reference to every task it starts, so none is garbage-collected mid-flight or dies silently."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pending(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks still running."""
        return frozenset(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a named task whose failure is logged."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s died", task.get_name(), exc_info=exc)

    async def wait(self, limit_s: float | None = None) -> None:
        """Wait for the current tasks to finish, at most ``limit_s`` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=limit_s)

    async def cancel_all(self) -> None:
        """Cancel every task and wait until they have all stopped."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
