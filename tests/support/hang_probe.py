"""A probe suite for ``tests/test_hygiene.py`` (not collected on its own: no ``test_`` prefix).

One test hangs past its time limit, inside an event loop with agent-like tasks
running (where a signal-based timeout would land in the wrong task); the
other passes. The run must fail the first, run the second and end.
"""

from __future__ import annotations

import asyncio

import pytest


@pytest.mark.timeout(3)
async def test_hangs() -> None:
    async def busy() -> None:
        for _ in range(100_000):  # agent-like tasks that keep the loop busy
            await asyncio.sleep(0.01)

    helpers = [asyncio.create_task(busy()) for _ in range(3)]
    await asyncio.Event().wait()  # never set
    for helper in helpers:
        helper.cancel()


def test_after_the_hang() -> None:
    assert True
