"""Named, guarded background tasks: a loop that dies says so in the log.

(The agent core has its own; adapters may not import the core, so this small
one serves the serving and platform adapters.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any


def guarded(
    coro: Coroutine[Any, Any, Any], *, name: str, logger: logging.Logger
) -> asyncio.Task[Any]:
    """Start ``coro`` as a task named ``name`` that logs how it ended.

    Cancellation is the normal end and is not logged; an exception is logged
    with its traceback. The caller keeps the task and cancels or awaits it.
    """

    async def run() -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("task %r failed", name)
            raise

    return asyncio.create_task(run(), name=name)


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it, swallowing its cancellation or failure."""
    if task is None:
        return
    task.cancel()
    # Its failure was logged by guarded(); stopping must not fail.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
