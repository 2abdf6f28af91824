"""Guarded tasks: every background coroutine is named, tracked and watched.

A task that fails is logged with its name; an endless task (a loop that should
run until cancelled) that ends for any reason also flips the owner's health,
so a dead heartbeat or scheduler shows up in readiness instead of silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("scanflow_agents.tasks")


class Tasks:
    """A set of guarded tasks owned by one agent runtime."""

    def __init__(self, owner: str, *, on_broken: Callable[[str], None] | None = None) -> None:
        self.owner = owner
        self.on_broken = on_broken
        self._tasks: set[asyncio.Task[Any]] = set()
        self._endless: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str, endless: bool = False
    ) -> asyncio.Task[Any]:
        """Start ``coro`` as a tracked task; failures are logged, never lost."""
        task = asyncio.create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        if endless:
            self._endless.add(task)
        task.add_done_callback(lambda t: self._done(t, name, endless))
        return task

    def _done(self, task: asyncio.Task[Any], name: str, endless: bool) -> None:
        self._tasks.discard(task)
        self._endless.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("task %r of agent %r failed: %s", name, self.owner, exc, exc_info=exc)
        elif endless:
            logger.error("task %r of agent %r ended unexpectedly", name, self.owner)
        else:
            return
        if endless and self.on_broken is not None:
            self.on_broken(name)

    async def wait(self, timeout: float) -> bool:
        """Wait for the finite tasks (not the endless loops) to finish; ``False`` on timeout."""
        finite = self._tasks - self._endless
        if not finite:
            return True
        _, pending = await asyncio.wait(finite, timeout=timeout)
        return not pending

    async def cancel(self, timeout: float = 5.0) -> None:
        """Cancel every tracked task and wait, bounded, for them to end."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                logger.error(
                    "task %s of agent %r ignored cancellation", task.get_name(), self.owner
                )
