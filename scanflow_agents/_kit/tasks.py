"""Guarded tasks: every background coroutine is named, tracked and watched.

The one way this package starts a task. A task that fails is logged with its
name and owner; an endless task (a loop that should run until cancelled) that
ends for any reason also calls its owner's ``on_broken``, so a dead heartbeat,
recorder or scheduler shows up in readiness instead of silently.

Two forms:

- :func:`guarded` starts one task the caller keeps (and later :func:`stop`\\ s):
  a platform's batch run, a model server's loading, a recorder's flush loop;
- :class:`Tasks` is a group owned by one agent runtime, which waits for its
  finite tasks with a deadline at shutdown and then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_logger = logging.getLogger("scanflow_agents.tasks")


def guarded(
    coro: Coroutine[Any, Any, T],
    *,
    name: str,
    logger: logging.Logger = _logger,
    endless: bool = False,
    on_broken: Callable[[str], None] | None = None,
) -> asyncio.Task[T]:
    """Start ``coro`` as the task ``name``; how it ends is logged, never lost.

    Cancellation is the normal end of a task and is not logged. An exception
    is logged with its traceback (the exception stays on the task for whoever
    awaits it). An ``endless`` task that ends for any reason but cancellation
    is logged and reported to ``on_broken(name)``.

    Args:
        coro: the coroutine to run.
        name: the task's name in logs and in ``asyncio.all_tasks()``.
        logger: where its failure is logged (the owner's logger).
        endless: the task is a loop that only cancellation should end.
        on_broken: called with ``name`` when an endless task ends.
    """
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(lambda t: _ended(t, name, logger, endless, on_broken))
    return task


def _ended(
    task: asyncio.Task[Any],
    name: str,
    logger: logging.Logger,
    endless: bool,
    on_broken: Callable[[str], None] | None,
) -> None:
    if task.cancelled():
        return
    exc = task.exception()  # also marks it retrieved: no "never retrieved" warning
    if exc is not None:
        logger.error("task %r failed: %s", name, exc, exc_info=exc)
    elif endless:
        logger.error("task %r ended unexpectedly", name)
    else:
        return
    if endless and on_broken is not None:
        on_broken(name)


async def stop(task: asyncio.Task[Any] | None, timeout: float | None = None) -> bool:
    """Cancel ``task`` and wait for it to end; ``False`` if it ignored cancellation in time.

    Its failure, if any, was logged when it ended: stopping never raises it.
    """
    if task is None:
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if done:
        # Retrieve the outcome so a failure is not reported again at exit.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()
    return bool(done)


class Tasks:
    """The guarded tasks of one owner (an agent runtime).

    Args:
        owner: names the owner in task names and logs (``<owner>:<task>``).
        on_broken: called with a task's name when one of the endless tasks ends.
    """

    def __init__(
        self,
        owner: str,
        *,
        on_broken: Callable[[str], None] | None = None,
        logger: logging.Logger = _logger,
    ) -> None:
        self.owner = owner
        self.on_broken = on_broken
        self.logger = logger
        self._tasks: set[asyncio.Task[Any]] = set()
        self._endless: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str, endless: bool = False
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a tracked task named ``<owner>:<name>`` (see :func:`guarded`)."""
        task = guarded(
            coro,
            name=f"{self.owner}:{name}",
            logger=self.logger,
            endless=endless,
            on_broken=self._broken,
        )
        self._tasks.add(task)
        if endless:
            self._endless.add(task)
        # Registered after guarded()'s own callback: the failure is logged first.
        task.add_done_callback(self._forget)
        return task

    def _broken(self, name: str) -> None:
        if self.on_broken is not None:
            self.on_broken(name.removeprefix(f"{self.owner}:"))

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._endless.discard(task)

    async def wait(self, timeout: float) -> bool:
        """Wait for the finite tasks (not the endless loops) to finish; ``False`` on timeout.

        Tasks started while waiting are not waited for: a stopping owner has
        stopped starting new work before it waits.
        """
        finite = self._tasks - self._endless
        if not finite:
            return True
        _, pending = await asyncio.wait(finite, timeout=timeout)
        return not pending

    async def cancel(self, timeout: float = 5.0) -> bool:
        """Cancel every tracked task and wait, bounded, for them to end.

        Returns ``False`` (and logs each) if some ignored cancellation within
        ``timeout``: they are left behind rather than blocking shutdown forever.
        """
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            self.logger.error("task %s ignored cancellation for %g s", task.get_name(), timeout)
        return not pending
