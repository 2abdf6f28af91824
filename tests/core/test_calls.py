"""The call path's guarantees, on the in-memory bus and on a real NATS server alike.

Idempotency keyed on (agent, actuator, call id) with only successes kept; the
shared store honoured by a restarted agent; ``in_doubt`` for a call a dead
replica started; size limits answered with ``too_large``; refusals that do
not echo their input; errors of nested calls; ``busy`` at the in-flight limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from scanflow_agents import (
    Agent,
    BadInput,
    Busy,
    HandlerFailed,
    InDoubt,
    Rejected,
    Settings,
    TooLarge,
    Unavailable,
    actuator,
)
from scanflow_agents._core.calling import call_envelope
from scanflow_agents._core.guards import Replies, call_key
from scanflow_agents.messages import Envelope, Reply, new_id, utcnow
from scanflow_agents.testing import AgentHarness, eventually
from scanflow_agents.transports.nats import NatsTransport

MIB = 2**20


class Worker(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs: list[tuple[str, Any]] = []

    @actuator()
    async def echo(self, text: str) -> str:
        self.runs.append(("echo", text))
        return text

    @actuator()
    async def slow(self, seconds: float) -> float:
        self.runs.append(("slow", seconds))
        await asyncio.sleep(seconds)
        return seconds

    @actuator(cooldown=1.0)
    async def cool(self) -> str:
        self.runs.append(("cool", None))
        return "done"

    @actuator()
    async def count(self, n: int) -> int:
        return n

    @actuator()
    async def big(self, size: int) -> str:
        self.runs.append(("big", size))
        return "x" * size

    @actuator(idempotent=True)
    async def rerun(self) -> str:
        self.runs.append(("rerun", None))
        return "again"

    @actuator()
    async def fragile(self) -> str:
        self.runs.append(("fragile", None))
        raise RuntimeError("half done")


async def test_the_key_is_agent_actuator_and_call_id(bus: str | None) -> None:
    worker = Worker()
    async with AgentHarness(worker, nats_url=bus) as h:
        assert await h.call("worker", "echo", text="hi", call_id="k") == "hi"
        # The same id to another actuator is another call, not a redelivery.
        assert await h.call("worker", "slow", seconds=0.01, call_id="k") == 0.01
        assert worker.runs == [("echo", "hi"), ("slow", 0.01)]
        assert await h.call("worker", "echo", text="hi", call_id="k") == "hi"
        assert worker.runs == [("echo", "hi"), ("slow", 0.01)]


@pytest.mark.fake_clock
async def test_refusals_and_failures_are_not_kept_as_answers(bus: str | None) -> None:
    worker = Worker()
    async with AgentHarness(worker, nats_url=bus) as h:
        await h.call("worker", "cool", call_id="c1")
        with pytest.raises(Rejected, match="cooling down"):
            await h.call("worker", "cool", call_id="c2")
        await asyncio.sleep(1.05)
        # Retried with the same id after the cooldown: it runs, the refusal was no answer.
        assert await h.call("worker", "cool", call_id="c2") == "done"
        assert worker.runs.count(("cool", None)) == 2
        with pytest.raises(BadInput):
            await h.call("worker", "echo", text=3, call_id="e1")
        assert await h.call("worker", "echo", text="ok", call_id="e1") == "ok"
        for _ in range(2):  # a failure is not kept either: the retry runs again
            with pytest.raises(HandlerFailed, match="half done"):
                await h.call("worker", "fragile", call_id="f1")
        assert worker.runs.count(("fragile", None)) == 2


async def test_a_restarted_agent_answers_a_done_call_from_the_shared_store(
    bus: str | None,
) -> None:
    async with AgentHarness(nats_url=bus) as h:
        first = Worker(settings=h.settings)
        async with first.running(await h.connect("worker")):
            assert await h.call("worker", "echo", text="once", call_id="r1") == "once"
        second = Worker(settings=h.settings)
        async with second.running(await h.connect("worker")):
            # Another process (another instance id): the reply comes from the store.
            assert await h.call("worker", "echo", text="once", call_id="r1") == "once"
        assert first.runs == [("echo", "once")]
        assert second.runs == []


async def _plant_started(h: AgentHarness, actuator_id: str, call_id: str) -> dict[str, Any]:
    """What a replica that died mid-action leaves in the shared store."""
    record = {
        "state": "started",
        "agent": "worker",
        "call_id": call_id,
        "instance": "deadbeef0000",
        "started": utcnow().isoformat(),
    }
    await h.client.transport.kv_put(
        h.subjects.calls_bucket,
        f"worker.{call_key(actuator_id, call_id)}",
        json.dumps(record).encode(),
    )
    return record


async def test_a_call_started_by_a_dead_replica_is_in_doubt_not_run_twice(
    bus: str | None,
) -> None:
    worker = Worker()
    async with AgentHarness(worker, nats_url=bus) as h:
        planted = await _plant_started(h, "echo", "lost-1")
        with pytest.raises(InDoubt, match="was not run again") as info:
            await h.call("worker", "echo", text="x", call_id="lost-1")
        assert info.value.details == {
            "instance": planted["instance"],
            "started": planted["started"],
        }
        assert worker.runs == []
        # An actuator declared idempotent is run again instead.
        await _plant_started(h, "rerun", "lost-2")
        assert await h.call("worker", "rerun", call_id="lost-2") == "again"
        assert await h.call("worker", "rerun", call_id="lost-2") == "again"
        assert worker.runs == [("rerun", None)]
        # The start record of a keyed call is in the audit trail, before its action.
        await h.settle()
        kinds = [e["kind"] for e in h.events if e["causation_id"] == "lost-2"]
        assert kinds == ["started", "action"]


async def test_oversized_request_reply_and_record_are_answered(bus: str | None) -> None:
    worker = Worker()
    async with AgentHarness(worker, nats_url=bus) as h:
        limit = h.client.transport.max_payload
        assert limit == MIB  # the server's default (and the in-memory bus's)
        with pytest.raises(TooLarge) as request:
            await h.call("worker", "echo", text="x" * (limit + 10))
        assert request.value.details["limit"] == limit
        assert request.value.details["size"] > limit
        with pytest.raises(TooLarge, match="the action ran") as reply:
            await h.call("worker", "big", size=limit + 10)
        assert reply.value.details["limit"] == limit
        assert worker.runs == [("big", limit + 10)]
        # The action's record is stored, its result replaced by a digest.
        await h.settle()
        (record,) = h.calls("worker", "big")
        assert record["ok"] is True
        assert record["truncated"] == ["result"]
        assert record["result"]["bytes"] == limit + 12  # the JSON string, quotes included
        assert len(record["result"]["sha256"]) == 64
        assert record["reply_too_large"] == {"size": reply.value.details["size"], "limit": limit}
        # An emitted event too large for one message is stored shrunk, and what
        # follows is not held up behind it.
        runtime = worker.runtime
        await runtime.emit("huge.thing", {"blob": "y" * limit, "note": "kept"})
        assert await h.call("worker", "echo", text="after") == "after"
        await h.settle()
        (huge,) = [e for e in h.events if e.get("topic") == "huge.thing"]
        assert huge["payload"]["note"] == "kept"
        assert huge["payload"]["blob"]["truncated"] is True
        assert runtime.recorder.truncated == 2


async def test_a_refusal_never_echoes_its_input(bus: str | None) -> None:
    worker = Worker()
    async with AgentHarness(worker, nats_url=bus) as h:
        with pytest.raises(BadInput) as info:
            await h.call("worker", "count", n="9" * 500_000)
        assert info.value.field == "n"
        assert len(json.dumps(info.value.details)) < 2_000
        assert "99999" not in info.value.message + json.dumps(info.value.details)


class Relay(Agent):
    @actuator(retries=2, backoff=0.01, errors="permanent")
    async def relay(self, target: str) -> Any:
        return await self.call(target, "echo", text="hi", timeout=1)

    @actuator()
    async def ask_bad(self) -> Any:
        return await self.call("worker", "count", n="many")


async def test_a_failed_nested_call_is_a_handler_failure_with_its_cause(
    bus: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with AgentHarness(Relay(), Worker(), nats_url=bus) as h:
        with (
            caplog.at_level(logging.WARNING, logger="scanflow_agents.handlers"),
            pytest.raises(HandlerFailed) as info,
        ):
            await h.call("relay", "relay", target="absent", timeout=10)
        cause = info.value.details["cause"]
        assert (cause["code"], cause["agent"]) == ("unavailable", "absent")
        assert cause["actuator"] == "echo"
        # Unavailable downstream is temporary: retried by the handler's knobs, at WARNING.
        retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
        assert len(retries) == 2
        relay_logs = [r for r in caplog.records if "relay" in r.getMessage()]
        assert relay_logs
        assert all(r.levelno == logging.WARNING for r in relay_logs)
        # A downstream bad_input is not the outer caller's bad input.
        with pytest.raises(HandlerFailed) as bad:
            await h.call("relay", "ask_bad")
        assert bad.value.details["cause"]["code"] == "bad_input"
        assert bad.value.field is None


async def test_calls_beyond_the_in_flight_limit_are_answered_busy(bus: str | None) -> None:
    settings = Settings.defaults().model_copy(
        update={"agent": Settings.defaults().agent.model_copy(update={"max_inflight": 2})}
    )
    worker = Worker()
    async with AgentHarness(worker, nats_url=bus, settings=settings) as h:
        slow = [asyncio.create_task(h.call("worker", "slow", seconds=1.0)) for _ in range(2)]
        await eventually(lambda: worker.runtime.dispatcher.inflight == 2)
        # Sent once, without the client's retries: the agent answers busy at once
        # (a short client timeout would race that answer on a loaded machine).
        call = call_envelope("harness", "worker", "echo", {"text": "x"})
        subject = h.subjects.act("worker", "echo")
        answer = await h.client.transport.request(subject, json.dumps(call).encode(), timeout=10)
        reply = Reply.model_validate(Envelope.decode(answer).payload)
        assert reply.error is not None
        assert (reply.error.code, "max_inflight 2" in reply.error.message) == (Busy.code, True)
        # Within a longer timeout the client retries until there is room.
        assert await h.call("worker", "echo", text="y", timeout=10) == "y"
        assert await asyncio.gather(*slow) == [1.0, 1.0]
        assert worker.runtime.dispatcher.busy >= 1
        await h.settle()
        # Every executed call has its record; the refused one has none.
        assert len(h.calls("worker")) == len(worker.runs) == 3


class Stopper(Agent):
    async def on_stop(self) -> None:
        await self.emit("stopper.bye", {"id": new_id()})


async def test_an_event_emitted_in_on_stop_reaches_the_stream(bus: str | None) -> None:
    async with AgentHarness(nats_url=bus) as h:
        agent = Stopper(settings=h.settings)
        async with agent.running(await h.connect("stopper")):
            pass
        history = await h.client.history(kinds=None)
        assert [record["topic"] for record in history] == ["stopper.bye"]


async def test_nobody_answering_right_after_a_reconnect_is_retried(bus: str | None) -> None:
    async with AgentHarness(nats_url=bus) as h:
        transport = h.client.transport
        started = time.monotonic()
        with pytest.raises(Unavailable):  # no reconnect: an absent agent fails at once
            await h.call("worker", "echo", text="x", timeout=5)
        assert time.monotonic() - started < 1
        # Our connection just came back: the agent may be resubscribing; it is
        # given until the caller's timeout to answer.
        transport.last_reconnect = time.monotonic()
        runtime = Worker(settings=h.settings).running(await h.connect("worker"))

        async def late_start() -> None:
            await asyncio.sleep(0.3)
            await runtime.start()

        starting = asyncio.create_task(late_start())
        try:
            assert await h.call("worker", "echo", text="back", timeout=5) == "back"
        finally:
            await starting
            await runtime.stop()
        with pytest.raises(Unavailable):  # and not beyond the caller's timeout
            await h.call("absent", "echo", text="x", timeout=0.3)


async def test_the_process_keeps_replies_within_its_byte_budget() -> None:
    replies = Replies(max_bytes=1000, window=60)
    for i in range(5):
        replies.begin(f"k{i}")
        replies.finish(f"k{i}", Reply(ok=True, result="x" * 300), 300)
    # 5 x 300 bytes do not fit in 1,000: the oldest went first.
    assert (len(replies), replies.bytes) == (3, 900)
    assert replies.lookup("k0") is None
    assert replies.lookup("k4") == Reply(ok=True, result="x" * 300)
    replies.begin("big")
    replies.finish("big", Reply(ok=True, result="y"), 5000)  # larger than the budget: not kept
    assert replies.lookup("big") is None


async def test_a_duplicate_is_answered_from_the_kept_reply_within_the_budget(
    bus: str | None,
) -> None:
    settings = Settings.defaults().model_copy(
        update={"agent": Settings.defaults().agent.model_copy(update={"idempotency_bytes": 400})}
    )
    worker = Worker()
    async with AgentHarness(worker, nats_url=bus, settings=settings) as h:
        await h.call("worker", "echo", text="a" * 100, call_id="b1")
        await h.call("worker", "echo", text="b" * 100, call_id="b2")
        replies = worker.runtime.dispatcher.replies
        assert 0 < replies.bytes <= 400
        assert len(replies) == 2
        await h.call("worker", "echo", text="c" * 300, call_id="b3")
        assert replies.bytes <= 400  # the older replies made room


async def test_a_reply_says_when_its_record_is_not_stored_yet(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.defaults().model_copy(
        update={
            "agent": Settings.defaults().agent.model_copy(
                update={"record_timeout": 1.0, "shutdown_timeout": 1.0}
            )
        }
    )
    worker = Worker()
    async with AgentHarness(worker, nats_url=nats_url, settings=settings) as h:
        assert await h.call("worker", "echo", text="stored") == "stored"
        # The stream goes away: the action still runs and answers, and the
        # caller is told that its record is not stored (it stays queued).
        transport = h.client.transport
        assert isinstance(transport, NatsTransport)
        await transport.js.delete_stream(transport.streams[0].name)
        with caplog.at_level(logging.WARNING, logger="scanflow_agents.calling"):
            assert await h.call("worker", "echo", text="queued", timeout=10) == "queued"
        (told,) = [r for r in caplog.records if "not stored yet" in r.getMessage()]
        assert "stays queued" in told.getMessage()
        assert len(worker.runtime.recorder.backlog) >= 1


@pytest.mark.parametrize("unrecorded", ["refuse", "act"])
async def test_while_the_stream_cannot_store_an_agent_refuses_to_act_unless_told_to(
    nats_url: str, unrecorded: str
) -> None:
    defaults = Settings.defaults()
    agent = defaults.agent.model_copy(
        update={"record_timeout": 1.0, "shutdown_timeout": 1.0, "unrecorded": unrecorded}
    )
    worker = Worker()
    async with AgentHarness(
        worker, nats_url=nats_url, settings=defaults.model_copy(update={"agent": agent})
    ) as h:
        recorder = worker.runtime.recorder
        recorder.retry_interval = 0.2
        transport = h.client.transport
        assert isinstance(transport, NatsTransport)
        await transport.js.delete_stream(transport.streams[0].name)
        # The first call finds out: it acts, and its reply says its record is queued.
        assert await h.call("worker", "echo", text="first", timeout=10) == "first"
        assert recorder.unstored is not None
        # Operators see it: in the heartbeat (console, `scanflow agents`) and the health
        # that probes and metrics read.
        (beat,) = [b for b in await h.client.discover(wait=0.3) if b.agent == "worker"]
        assert beat.unstored == recorder.unstored
        assert worker.runtime.health().unstored == recorder.unstored
        if unrecorded == "refuse":
            # Asked again until the timeout (it may be a failover), then told why.
            with pytest.raises(Unavailable, match="acts on nothing it cannot record"):
                await h.call("worker", "echo", text="second", timeout=1)
            assert worker.runs == [("echo", "first")]
        else:
            assert await h.call("worker", "echo", text="second", timeout=10) == "second"
            assert worker.runs == [("echo", "first"), ("echo", "second")]
        # The stream back: the queued records are stored, and calls act again.
        await transport._ensure_stream(transport.streams[0])
        await eventually(lambda: recorder.unstored is None, timeout=30)
        assert await h.call("worker", "echo", text="third", timeout=10) == "third"
        await eventually(lambda: not recorder.backlog and not recorder.sending, timeout=30)
        records = await h.client.history(agent="worker", kinds=["action"])
        texts = [r["payload"]["params"]["text"] for r in records]
        assert texts == [text for _, text in worker.runs]  # every action recorded, once


async def test_reply_after_sent_answers_without_waiting_and_stores_the_record_later(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    defaults = Settings.defaults()
    settings = defaults.model_copy(
        update={
            "agent": defaults.agent.model_copy(
                update={"reply_after": "sent", "record_timeout": 30.0, "shutdown_timeout": 5.0}
            )
        }
    )
    worker = Worker()
    async with AgentHarness(worker, nats_url=nats_url, settings=settings) as h:
        worker.runtime.recorder.retry_interval = 0.2
        transport = h.client.transport
        assert isinstance(transport, NatsTransport)
        await transport.js.delete_stream(transport.streams[0].name)
        # No stream: with "stored" the reply would wait record_timeout (30 s) and
        # say `unrecorded`; with "sent" it goes out as soon as the record is written.
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="scanflow_agents.calling"):
            assert await h.call("worker", "echo", text="early", timeout=20) == "early"
        assert time.monotonic() - started < 15
        assert not [r for r in caplog.records if "not stored yet" in r.getMessage()]
        # The record was not lost: it stays queued and is stored once the stream is back.
        await transport._ensure_stream(transport.streams[0])
        recorder = worker.runtime.recorder
        await eventually(lambda: not recorder.backlog and not recorder.sending, timeout=60)
        records = await h.client.history(agent="worker", kinds=["action"])
        assert [r["payload"]["params"]["text"] for r in records] == ["early"]


async def test_a_keyed_call_the_call_store_cannot_take_is_unavailable_not_run(
    nats_url: str,
) -> None:
    worker = Worker()
    async with AgentHarness(worker, nats_url=nats_url) as h:
        assert await h.call("worker", "echo", text="kept", call_id="first") == "kept"
        transport = h.client.transport
        assert isinstance(transport, NatsTransport)
        await transport.js.delete_stream(f"KV_{h.subjects.calls_bucket}")  # the store is gone
        with pytest.raises(Unavailable, match="cannot claim call second in the shared call store"):
            await h.call("worker", "echo", text="lost", call_id="second", timeout=1)
        assert worker.runs == [("echo", "kept")]  # not run unclaimed: it could run twice
