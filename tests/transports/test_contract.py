"""The transport contract, run against the in-memory bus and a real NATS server alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from scanflow_agents.settings import NatsSettings
from scanflow_agents.testing import eventually
from scanflow_agents.transports import (
    MemoryBroker,
    MemoryTransport,
    Message,
    NoResponders,
    Refused,
    RequestTimeout,
    Transport,
    TransportError,
    subject_matches,
)
from scanflow_agents.transports.nats import NatsTransport

Connect = Callable[[], Awaitable[Transport]]


@pytest.fixture
async def connect(bus: str | None) -> AsyncIterator[Connect]:
    """Open connections to one bus; every test gets its own subjects and stream."""
    ns = uuid.uuid4().hex[:8]
    broker = MemoryBroker(stream_subjects=(f"t{ns}.events.>",))
    opened: list[Transport] = []

    async def open_one() -> Transport:
        if bus is None:
            transport: Transport = MemoryTransport(broker)
        else:
            transport = await NatsTransport.connect(
                NatsSettings(url=bus), stream=f"T{ns}", stream_subjects=[f"t{ns}.events.>"]
            )
        opened.append(transport)
        return transport

    open_one.ns = ns  # type: ignore[attr-defined]
    yield open_one
    for transport in opened:
        await transport.close()


def prefix(connect: Connect) -> str:
    return f"t{connect.ns}"  # type: ignore[attr-defined]


async def test_publish_reaches_every_subscriber_with_wildcards(connect: Connect) -> None:
    a, b = await connect(), await connect()
    p = prefix(connect)
    got: dict[str, list[str]] = {"star": [], "tail": [], "exact": []}

    def keep(key: str) -> Callable[[Message], Awaitable[None]]:
        async def handler(message: Message) -> None:
            got[key].append(message.subject)

        return handler

    await b.subscribe(f"{p}.x.*", keep("star"))
    await b.subscribe(f"{p}.>", keep("tail"))
    await b.subscribe(f"{p}.x.y", keep("exact"))
    await b.flush()
    await a.publish(f"{p}.x.y", b"1")
    await a.publish(f"{p}.x.y.z", b"2")
    await a.flush()
    await _until(lambda: len(got["tail"]) == 2)
    assert got["star"] == [f"{p}.x.y"]
    assert got["exact"] == [f"{p}.x.y"]
    assert got["tail"] == [f"{p}.x.y", f"{p}.x.y.z"]


async def test_queue_group_delivers_each_message_once(connect: Connect) -> None:
    sender, r1, r2 = await connect(), await connect(), await connect()
    p = prefix(connect)
    seen: list[bytes] = []

    async def handler(message: Message) -> None:
        seen.append(message.data)

    await r1.subscribe(f"{p}.work", handler, queue="workers")
    await r2.subscribe(f"{p}.work", handler, queue="workers")
    await r1.flush()
    await r2.flush()
    for i in range(50):
        await sender.publish(f"{p}.work", str(i).encode())
    await sender.flush()
    await _until(lambda: len(seen) == 50)
    await asyncio.sleep(0.05)
    assert sorted(int(x) for x in seen) == list(range(50))


async def test_request_reply(connect: Connect) -> None:
    client, server = await connect(), await connect()
    p = prefix(connect)

    async def echo(message: Message) -> None:
        await message.respond(message.data.upper())

    await server.subscribe(f"{p}.echo", echo)
    await server.flush()
    assert await client.request(f"{p}.echo", b"hello", timeout=2) == b"HELLO"


async def test_request_without_responders_fails_fast(connect: Connect) -> None:
    client = await connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoResponders):
        await client.request(f"{prefix(connect)}.nobody", b"", timeout=5)
    assert loop.time() - started < 1.0


async def test_request_times_out_when_nobody_answers(connect: Connect) -> None:
    client, server = await connect(), await connect()
    p = prefix(connect)

    async def silent(message: Message) -> None:
        pass

    await server.subscribe(f"{p}.silent", silent)
    await server.flush()
    with pytest.raises(RequestTimeout):
        await client.request(f"{p}.silent", b"", timeout=0.2)


async def test_gather_collects_every_reply(connect: Connect) -> None:
    client = await connect()
    p = prefix(connect)
    for name in (b"a", b"b", b"c"):
        server = await connect()

        async def answer(message: Message, name: bytes = name) -> None:
            await message.respond(name)

        await server.subscribe(f"{p}.roll", answer)
        await server.flush()
    assert sorted(await client.gather(f"{p}.roll", b"", timeout=0.3)) == [b"a", b"b", b"c"]


async def test_durable_events_are_replayed_in_order(connect: Connect) -> None:
    writer, reader = await connect(), await connect()
    p = prefix(connect)
    for i in range(5):
        await writer.publish_durable(f"{p}.events.kind.{i % 2}", str(i).encode())
    history = await reader.history(f"{p}.events.>")
    assert [data for _, data in history] == [b"0", b"1", b"2", b"3", b"4"]
    odd = await reader.history(f"{p}.events.kind.1")
    assert [data for _, data in odd] == [b"1", b"3"]
    assert await reader.history(f"{p}.events.none") == []


async def test_durable_publish_outside_the_stream_is_an_error(connect: Connect) -> None:
    writer = await connect()
    with pytest.raises(TransportError):
        await writer.publish_durable(f"{prefix(connect)}.not-events.x", b"")


async def test_durable_events_also_reach_live_subscribers(connect: Connect) -> None:
    writer, reader = await connect(), await connect()
    p = prefix(connect)
    got: list[bytes] = []

    async def keep(message: Message) -> None:
        got.append(message.data)

    await reader.subscribe(f"{p}.events.>", keep)
    await reader.flush()
    await writer.publish_durable(f"{p}.events.a", b"x")
    await _until(lambda: got == [b"x"])


async def test_key_value_store(connect: Connect) -> None:
    a, b = await connect(), await connect()
    bucket = f"kv{prefix(connect)}"
    assert await a.kv_get(bucket, "cursor") is None
    await a.kv_put(bucket, "cursor", b"42")
    assert await b.kv_get(bucket, "cursor") == b"42"
    await b.kv_put(bucket, "cursor", b"43")
    assert await a.kv_get(bucket, "cursor") == b"43"


async def test_key_value_create_is_atomic_and_delete_frees_the_key(connect: Connect) -> None:
    a, b = await connect(), await connect()
    bucket = f"kvc{prefix(connect)}"
    results = await asyncio.gather(*(t.kv_create(bucket, "call.k", b"mine") for t in (a, b, a)))
    assert sorted(results) == [False, False, True]
    assert await b.kv_get(bucket, "call.k") == b"mine"
    assert await a.kv_create(bucket, "call.k", b"again") is False
    await b.kv_delete(bucket, "call.k")
    assert await a.kv_get(bucket, "call.k") is None
    assert await a.kv_create(bucket, "call.k", b"again") is True
    await a.kv_delete(bucket, "never-set")  # no error


async def test_key_value_ttl_expires_keys(connect: Connect) -> None:
    a = await connect()
    bucket = f"kvt{prefix(connect)}"
    await a.kv_configure(bucket, ttl=1.0)
    assert await a.kv_create(bucket, "k", b"v") is True
    await asyncio.sleep(1.5)
    assert await a.kv_get(bucket, "k") is None
    assert await a.kv_create(bucket, "k", b"w") is True


async def test_messages_over_the_max_payload_are_refused(connect: Connect) -> None:
    a = await connect()
    p = prefix(connect)
    assert a.max_payload == 2**20
    with pytest.raises(Refused):
        await a.publish_durable(f"{p}.events.big", b"x" * (a.max_payload + 1))
    big = b"x" * (a.max_payload + 1)
    (error,) = await a.publish_durable_batch([(f"{p}.events.big", big, None)])
    assert isinstance(error, Refused)


async def test_close_drains_and_is_idempotent(connect: Connect) -> None:
    sender, receiver = await connect(), await connect()
    p = prefix(connect)
    handled: list[bytes] = []

    async def slow(message: Message) -> None:
        await asyncio.sleep(0.01)
        handled.append(message.data)

    await receiver.subscribe(f"{p}.slow", slow)
    await receiver.flush()
    for i in range(10):
        await sender.publish(f"{p}.slow", str(i).encode())
    await sender.flush()
    await asyncio.sleep(0.02)  # let them reach the receiver
    await receiver.close()
    await receiver.close()
    assert len(handled) == 10
    assert not receiver.connected


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b.>", "x.b.c", True),
        ("a.b.c", "a.b", False),
    ],
)
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


async def _until(condition: Callable[[], bool]) -> None:
    await eventually(condition, timeout=3)
