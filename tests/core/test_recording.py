"""The recorder alone, on the in-memory bus: what it does with events it cannot store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from scanflow_agents._core.recording import NotStored, Recorder
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.memory import MemoryBroker
from scanflow_agents.transports.streams import StreamSpec


@pytest.fixture
async def running() -> AsyncIterator[tuple[MemoryBroker, Recorder]]:
    broker = MemoryBroker(streams=[StreamSpec("T", ("scanflow.t.events.>", "scanflow.t.chains.>"))])
    recorder = Recorder("a", broker.connect(), Subjects("t"), [], limit=3)
    recorder.retry_interval = 0.05
    task = asyncio.create_task(recorder.run())
    try:
        yield broker, recorder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_event_refused_for_good_is_dropped_with_an_error_not_retried(
    running: tuple[MemoryBroker, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    broker, recorder = running
    with caplog.at_level(logging.ERROR, logger="scanflow_agents.recording"):
        refused, refused_stored = recorder.enqueue(
            "observation", "s", {"blob": "b" * 5000}, correlation_id="c", track=True
        )
        _, stored = recorder.enqueue("action", "x", {"n": 2}, correlation_id="c", track=True)
        # The server's limit went down after the event was queued: the stream
        # refuses it for good, as JetStream refuses a message over its limits.
        broker.max_payload = 2000
        assert stored is not None
        assert refused_stored is not None
        await asyncio.wait_for(stored, 2)  # not held up behind the refused one
        with pytest.raises(Exception, match="over the max payload"):
            await refused_stored
    assert recorder.refused == 2  # the event and its chain-index copy
    # The chain-index copy goes first (unconfirmed on NATS, see recording.py).
    assert [subject.split(".")[2] for subject, _ in broker.stream] == ["chains", "events"]
    error = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert refused["id"] in error.getMessage()
    assert "observation.a.s" in error.getMessage()


async def test_a_full_backlog_makes_records_wait_and_an_outage_tells_the_waiters(
    running: tuple[MemoryBroker, Recorder],
) -> None:
    _, recorder = running
    await recorder.transport.close()  # every attempt fails now, as with NATS down
    _, first = recorder.enqueue("action", "x", {"n": 0}, correlation_id="c", track=True)
    assert first is not None
    # The caller waiting for it is told it is not stored; the event stays queued.
    with pytest.raises(NotStored):
        await asyncio.wait_for(first, 2)
    for n in range(2):
        recorder.enqueue("action", "x", {"n": n + 1}, correlation_id="c")
    assert recorder.full
    waiting = asyncio.create_task(recorder.record("action", "x", {"n": 9}, correlation_id="c"))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # a sensor's or rule's record waits for room; nothing dropped
    assert len(recorder.backlog) == 6  # three events, each with its chain-index copy
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
