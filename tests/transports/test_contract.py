"""The transport contract, run against the in-memory bus and a real NATS server alike."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from scanflow_agents.settings import NatsSettings
from scanflow_agents.testing import eventually
from scanflow_agents.transports import (
    Durable,
    KvConflict,
    MemoryBroker,
    MemoryTransport,
    Message,
    NoResponders,
    Refused,
    RequestTimeout,
    StoredMessage,
    Transport,
    TransportError,
    subject_matches,
)
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.streams import StreamSpec

Connect = Callable[[], Awaitable[Transport]]

# Every case on the in-memory bus, one nats-server, and a three-server cluster
# whose streams and buckets keep three copies.
BUSES = ("memory", "nats", "cluster")
# The telemetry stream's size limit in these tests: a few dozen messages fill it.
TELEMETRY_BYTES = 16 * 1024


@pytest.fixture
async def connect(bus: str | None) -> AsyncIterator[Connect]:
    """Open connections to one bus; every test gets its own subjects and stream."""
    ns = uuid.uuid4().hex[:8]
    # Two streams by purpose, as every namespace has: audit (no size limit) and
    # telemetry (a size limit, the oldest dropped).
    streams = [
        StreamSpec(f"T{ns}", (f"t{ns}.events.>",)),
        StreamSpec(f"T{ns}_TEL", (f"t{ns}.telemetry.>",), max_bytes=TELEMETRY_BYTES),
    ]
    broker = MemoryBroker(streams=streams)
    opened: list[Transport] = []

    async def open_one() -> Transport:
        if bus is None:
            transport: Transport = MemoryTransport(broker)
        else:
            # On the cluster: streams and buckets with a copy on each of its servers,
            # every connection to its first one. Plain messages reach a subscriber on
            # another server only once its interest has spread there (milliseconds,
            # with no flush that proves it), which this contract does not promise;
            # the failover tests connect agents to every server.
            urls = bus.split(",")
            settings = NatsSettings(url=urls[0], replicas=len(urls))
            transport = await NatsTransport.connect(settings, streams=streams)
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
    started = time.monotonic()
    answers = await client.gather(f"{p}.roll", b"", timeout=5, expect=3)
    assert sorted(answers) == [b"a", b"b", b"c"]
    assert time.monotonic() - started < 1  # not the 5 s: the three known ones answered


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


async def test_a_plain_publish_on_a_stream_subject_is_stored_too(connect: Connect) -> None:
    writer, reader = await connect(), await connect()
    p = prefix(connect)
    await writer.publish(f"{p}.events.plain", b"1")
    await writer.flush()
    got: list[int] = []
    await reader.consume(f"{p}.events.plain", "plain", _collector(got))
    await _until(lambda: got == [1])


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


async def test_messages_over_the_max_payload_are_refused(connect: Connect) -> None:
    a = await connect()
    p = prefix(connect)
    assert a.max_payload == 2**20
    with pytest.raises(Refused):
        await a.publish_durable(f"{p}.events.big", b"x" * (a.max_payload + 1))
    big = b"x" * (a.max_payload + 1)
    (error,) = await a.publish_durable_batch([Durable(f"{p}.events.big", big)])
    assert isinstance(error, Refused)


async def test_key_value_revisions_let_exactly_one_writer_win(connect: Connect) -> None:
    a, b = await connect(), await connect()
    name = f"kv{prefix(connect)}"
    kv_a, kv_b = await a.key_value(name), await b.key_value(name)
    first = await kv_a.create("lease", b"a")
    with pytest.raises(KvConflict):
        await kv_b.create("lease", b"b")
    entry = await kv_b.get("lease")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"a", first)
    # Both saw the same revision; only the first conditional update lands.
    second = await kv_a.update("lease", b"a2", first)
    assert second > first
    with pytest.raises(KvConflict):
        await kv_b.update("lease", b"b2", first)
    with pytest.raises(KvConflict):
        await kv_b.delete("lease", revision=first)
    await kv_a.delete("lease", revision=second)
    assert await kv_b.get("lease") is None
    # A deleted key can be created again, at a higher revision.
    assert await kv_b.create("lease", b"b") > second
    assert await kv_a.put("other", b"x") > second


async def test_key_value_lists_its_current_entries(connect: Connect) -> None:
    a, b = await connect(), await connect()
    kv_a, kv_b = (
        await a.key_value(f"list{prefix(connect)}"),
        await b.key_value(f"list{prefix(connect)}"),
    )
    assert await kv_b.entries() == []
    await kv_a.put("planner.b", b"2")
    await kv_a.put("planner.a", b"1")
    last = await kv_a.put("checker.x", b"3")
    await kv_a.put("planner.gone", b"4")
    await kv_a.delete("planner.gone")  # a deleted key is not listed
    await kv_a.put("planner.a", b"1'")  # the latest value only
    listed = await kv_b.entries("planner")
    assert [(e.key, e.value) for e in listed] == [("planner.a", b"1'"), ("planner.b", b"2")]
    assert [e.key for e in await kv_b.entries()] == ["checker.x", "planner.a", "planner.b"]
    assert (await kv_b.entries("checker"))[0].revision == last
    assert await kv_b.entries("nobody") == []
    with pytest.raises(ValueError, match="invalid"):
        await kv_b.entries("bad key")


@pytest.mark.fake_clock
async def test_key_value_entries_expire_after_the_bucket_ttl(connect: Connect) -> None:
    a, b = await connect(), await connect()
    name = f"ttl{prefix(connect)}"
    kv_a, kv_b = await a.key_value(name, ttl=1.0), await b.key_value(name, ttl=1.0)
    revision = await kv_a.create("lease", b"a")
    await asyncio.sleep(0.6)
    revision = await kv_a.update("lease", b"a", revision)  # a renewal restarts the clock
    await asyncio.sleep(0.6)
    assert await kv_b.get("lease") is not None
    for _ in range(50):  # the server expires entries on its own timer
        if await kv_b.get("lease") is None:
            break
        await asyncio.sleep(0.1)
    assert await kv_b.get("lease") is None
    assert await kv_b.create("lease", b"b") > revision


@pytest.mark.fake_clock
async def test_a_shorter_ttl_declared_later_does_not_cut_a_buckets_entries(
    connect: Connect,
) -> None:
    # Two agents of one namespace share the lease bucket with their own lease
    # times: the later one's shorter ttl must not expire the first one's lease.
    a, b = await connect(), await connect()
    name = f"floor{prefix(connect)}"
    kv_a = await a.key_value(name, ttl=3.0)
    await kv_a.create("long", b"a")
    kv_b = await b.key_value(name, ttl=1.0)
    await asyncio.sleep(1.8)
    assert await kv_b.get("long") is not None
    assert kv_b.ttl == 3.0  # what the bucket keeps, not what was asked
    await b.key_value(name, ttl=5.0)  # a longer one raises it
    assert (await a.key_value(name, ttl=5.0)).ttl == 5.0


async def test_a_reader_finds_an_existing_bucket_and_makes_none(connect: Connect) -> None:
    a, b = await connect(), await connect()
    name = f"found{prefix(connect)}"
    assert await a.existing_key_value(name) is None
    assert await b.existing_key_value(name) is None  # the look made nothing
    await (await a.key_value(name, ttl=60)).put("replica", b"state")
    found = await b.existing_key_value(name)
    assert found is not None
    assert [(e.key, e.value) for e in await found.entries()] == [("replica", b"state")]


async def test_key_value_shorthands(connect: Connect) -> None:
    a, b = await connect(), await connect()
    bucket = f"short{prefix(connect)}"
    await a.kv_configure(bucket, ttl=60)
    assert await a.kv_create(bucket, "call", b"started")
    assert not await b.kv_create(bucket, "call", b"started")
    assert await b.kv_get(bucket, "call") == b"started"
    await b.kv_delete(bucket, "call")
    await b.kv_delete(bucket, "never-set")
    assert await a.kv_get(bucket, "call") is None
    assert await a.kv_create(bucket, "call", b"again")


async def test_key_value_names_are_checked(connect: Connect) -> None:
    a = await connect()
    with pytest.raises(ValueError, match=r"bucket name 'no\.dots'"):
        await a.key_value("no.dots")
    kv = await a.key_value(f"kv{prefix(connect)}")
    with pytest.raises(ValueError, match="key 'a b'"):
        await kv.put("a b", b"")


async def _store(writer: Transport, subject: str, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await writer.publish_durable(subject, str(i).encode())


def _collector(got: list[int]) -> Callable[[StoredMessage], Awaitable[None]]:
    async def handler(message: StoredMessage) -> None:
        got.append(int(message.data))

    return handler


async def test_durable_consumer_delivers_stored_then_live_events_in_order(
    connect: Connect,
) -> None:
    writer, reader = await connect(), await connect()
    p = prefix(connect)
    await _store(writer, f"{p}.events.a", 5)
    await writer.publish_durable(f"{p}.events.b", b"-1")  # another subject: filtered out
    got: list[int] = []
    await reader.consume(f"{p}.events.a", "rule-a", _collector(got))
    await _until(lambda: len(got) == 5)
    await _store(writer, f"{p}.events.a", 5, start=5)
    await _until(lambda: len(got) == 10)
    await asyncio.sleep(0.2)
    assert got == list(range(10))


async def test_durable_consumer_resumes_after_the_last_acknowledged_event(
    connect: Connect,
) -> None:
    writer, first, second = await connect(), await connect(), await connect()
    p = prefix(connect)
    await _store(writer, f"{p}.events.a", 3)
    got: list[int] = []
    sub = await first.consume(f"{p}.events.a", "resume", _collector(got))
    await _until(lambda: len(got) == 3)
    await sub.unsubscribe()
    await _store(writer, f"{p}.events.a", 4, start=3)  # stored while nobody reads
    await second.consume(f"{p}.events.a", "resume", _collector(got))
    await _until(lambda: len(got) == 7)
    await asyncio.sleep(0.2)
    assert got == list(range(7))


async def test_a_failed_event_is_delivered_again(connect: Connect) -> None:
    writer, reader = await connect(), await connect()
    p = prefix(connect)
    seen: list[tuple[int, int]] = []

    async def flaky(message: StoredMessage) -> None:
        seen.append((int(message.data), message.deliveries))
        if message.deliveries == 1 and message.data == b"1":
            raise RuntimeError("planted failure")

    await _store(writer, f"{p}.events.a", 3)
    await reader.consume(f"{p}.events.a", "flaky", flaky)
    await _until(lambda: len(seen) == 4)
    # Order holds: event 2 waits until event 1 went through.
    assert seen == [(0, 1), (1, 1), (1, 2), (2, 1)]


async def test_an_event_a_dead_consumer_held_goes_to_the_next_one(connect: Connect) -> None:
    writer, doomed, heir = await connect(), await connect(), await connect()
    p = prefix(connect)
    held = asyncio.Event()

    async def hang(message: StoredMessage) -> None:
        held.set()
        await asyncio.Event().wait()

    await _store(writer, f"{p}.events.a", 3)
    await doomed.consume(f"{p}.events.a", "shared", hang, ack_wait=1.0)
    await asyncio.wait_for(held.wait(), 5)
    await doomed.abort()  # killed with event 0 unacknowledged
    got: list[tuple[int, int]] = []

    async def keep(message: StoredMessage) -> None:
        got.append((int(message.data), message.deliveries))

    await heir.consume(f"{p}.events.a", "shared", keep, ack_wait=1.0)
    await _until(lambda: len(got) == 3)
    assert got == [(0, 2), (1, 1), (2, 1)]


async def test_a_new_durable_consumer_skips_events_older_than_max_age(connect: Connect) -> None:
    writer, reader = await connect(), await connect()
    p = prefix(connect)
    await _store(writer, f"{p}.events.a", 3)
    await asyncio.sleep(1.5)
    await _store(writer, f"{p}.events.a", 2, start=3)
    got: list[int] = []
    await reader.consume(f"{p}.events.a", "young", _collector(got), max_age=1.0)
    await _until(lambda: len(got) == 2)
    await asyncio.sleep(0.2)
    assert got == [3, 4]


async def test_replicas_sharing_a_durable_consumer_split_the_events(connect: Connect) -> None:
    writer, r1, r2 = await connect(), await connect(), await connect()
    p = prefix(connect)
    got: list[int] = []
    await r1.consume(f"{p}.events.a", "pool", _collector(got))
    await r2.consume(f"{p}.events.a", "pool", _collector(got))
    await _store(writer, f"{p}.events.a", 20)
    await _until(lambda: len(got) == 20)
    await asyncio.sleep(0.2)
    assert got == list(range(20))  # each once, and in order across both


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
    await eventually(condition, timeout=8)


async def test_a_full_stream_drops_its_oldest_and_the_other_stream_goes_on_storing(
    connect: Connect,
) -> None:
    """A fleet's telemetry filling its stream never stops the audit trail."""
    t = await connect()
    p = prefix(connect)
    report = b"x" * 1000
    sent = 3 * TELEMETRY_BYTES // len(report)
    for number in range(sent):
        await t.publish_durable(f"{p}.telemetry.serving.wf.node", b"%06d" % number + report)
    await t.publish_durable(f"{p}.events.action.a.scale", b"recorded")

    kept = await t.history(f"{p}.telemetry.>")
    assert 0 < len(kept) < sent  # the oldest went to make room
    assert sum(len(data) for _, data in kept) <= TELEMETRY_BYTES
    assert kept[-1][1].startswith(b"%06d" % (sent - 1))  # the newest stayed
    assert await t.history(f"{p}.events.>") == [(f"{p}.events.action.a.scale", b"recorded")]


async def test_a_subject_no_stream_stores_is_a_clear_error(connect: Connect) -> None:
    t = await connect()
    with pytest.raises(TransportError, match="no event stream stores subject"):
        await t.publish_durable(f"{prefix(connect)}.elsewhere.x", b"lost")


async def test_a_filter_wider_than_one_stream_reads_each_stream_under_it(
    connect: Connect,
) -> None:
    t = await connect()
    p = prefix(connect)
    await t.publish_durable(f"{p}.events.action.a.scale", b"audit")
    await t.publish_durable(f"{p}.telemetry.serving.wf.node", b"report")
    found = await t.history(f"{p}.>")
    assert sorted(data for _, data in found) == [b"audit", b"report"]
