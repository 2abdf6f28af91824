"""The task kit: guarded tasks, a group that waits with a deadline and cancels, dead loops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from scanflow_agents._kit.tasks import Tasks, guarded, stop


async def test_a_failing_task_is_logged_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise ValueError("bad row 7")

    task = guarded(fail(), name="reader", logger=logging.getLogger("test.kit"))
    with pytest.raises(ValueError, match="bad row 7"):
        await task  # the failure stays on the task for whoever awaits it
    (record,) = [r for r in caplog.records if r.name == "test.kit"]
    assert record.levelname == "ERROR"
    assert "task 'reader' failed: bad row 7" in record.getMessage()
    assert record.exc_info is not None


async def test_cancellation_is_a_normal_end(caplog: pytest.LogCaptureFixture) -> None:
    task = guarded(asyncio.sleep(10), name="sleeper")
    await asyncio.sleep(0)
    assert await stop(task) is True
    assert task.cancelled()
    assert await stop(None) is True
    assert not [r for r in caplog.records if "sleeper" in r.getMessage()]


async def test_stop_gives_up_on_a_task_that_ignores_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # a bug: swallowed cancellation

    task = guarded(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    assert await stop(task, timeout=0.05) is False
    release.set()
    task.cancel()
    await asyncio.wait({task})


async def test_an_endless_task_that_ends_is_reported_as_broken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken: list[str] = []
    tasks = Tasks("agent-x", on_broken=broken.append)

    async def ends() -> None:
        return None

    async def dies() -> None:
        raise OSError("socket closed")

    quiet = tasks.spawn(ends(), name="one-shot")  # a finite task may end: nothing to report
    loop = tasks.spawn(ends(), name="heartbeat", endless=True)
    crash = tasks.spawn(dies(), name="recorder", endless=True)
    await asyncio.wait({quiet, loop, crash})
    await asyncio.sleep(0)
    assert broken == ["heartbeat", "recorder"]
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "task 'agent-x:heartbeat' ended unexpectedly" in messages
    assert any("task 'agent-x:recorder' failed: socket closed" in m for m in messages)
    assert len(tasks) == 0


async def test_wait_has_a_deadline_and_skips_endless_loops() -> None:
    tasks = Tasks("agent-y")
    tasks.spawn(asyncio.sleep(3600), name="loop", endless=True)
    tasks.spawn(asyncio.sleep(0.01), name="quick")
    assert await tasks.wait(5.0) is True  # the loop is not waited for
    slow = tasks.spawn(asyncio.sleep(3600), name="slow")
    assert await tasks.wait(0.05) is False
    assert not slow.done()
    assert await tasks.cancel(timeout=1.0) is True
    assert slow.cancelled()
    assert len(tasks) == 0


async def test_spawned_tasks_are_named_after_their_owner() -> None:
    tasks = Tasks("agent-z")
    task = tasks.spawn(asyncio.sleep(0), name="call:scale")
    assert task.get_name() == "agent-z:call:scale"
    await task
