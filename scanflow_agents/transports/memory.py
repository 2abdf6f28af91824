"""An in-process message bus with the same contract as NATS.

A :class:`MemoryBroker` plays the server; each :class:`MemoryTransport` is one
client connection to it. Agents embedded in one process (tests, notebooks, the
test harness by default) talk through it without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Sequence
from datetime import datetime

from scanflow_agents._kit.tasks import guarded
from scanflow_agents.transports.base import (
    DEFAULT_MAX_PAYLOAD,
    KeyValue,
    Message,
    MessageHandler,
    NoResponders,
    Refused,
    RequestTimeout,
    StoredHandler,
    Subscription,
    Transport,
    TransportError,
    check_kv_names,
    subject_matches,
)
from scanflow_agents.transports.memstore import (
    MemoryBucket,
    MemoryConsumerSubscription,
    MemoryKeyValue,
    MemoryStream,
)
from scanflow_agents.transports.streams import StreamSpec, reads, stream_for

logger = logging.getLogger(__name__)

# Every namespace's streams, by purpose (see :mod:`.streams`); an agent on the
# real server gets its own namespace's, named from its settings.
DEFAULT_STREAMS = (
    StreamSpec("SCANFLOW", ("scanflow.*.events.>", "scanflow.*.chains.>")),
    StreamSpec("SCANFLOW_TELEMETRY", ("scanflow.*.telemetry.>",)),
)


class MemoryBroker:
    """The shared state of an in-memory bus: subscriptions, the event streams, the KV buckets.

    Args:
        streams: the streams that store events (by default every namespace's
            audit and telemetry streams, without a size limit).
    """

    def __init__(self, *, streams: Sequence[StreamSpec] = DEFAULT_STREAMS) -> None:
        self.streams = {spec.name: (spec, MemoryStream(spec.max_bytes)) for spec in streams}
        self.subscriptions: list[_MemorySubscription] = []
        self.buckets: dict[str, MemoryBucket] = {}
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self._inboxes = itertools.count()

    @property
    def stream(self) -> list[tuple[str, bytes]]:
        """The stored events of every stream as ``(subject, data)``, oldest first in each."""
        return [
            (event.subject, event.data)
            for _, stream in self.streams.values()
            for event in stream.events
        ]

    def stream_of(self, subject: str) -> MemoryStream:
        """The stream that stores ``subject`` (a subject or a filter).

        Raises:
            TransportError: no stream stores it.
        """
        spec = stream_for([spec for spec, _ in self.streams.values()], subject)
        return self.streams[spec.name][1]

    def connect(self) -> MemoryTransport:
        return MemoryTransport(self)

    def new_inbox(self) -> str:
        return f"_INBOX.{next(self._inboxes)}"

    def route(self, subject: str, data: bytes, reply: str | None) -> int:
        """Deliver to every plain subscriber and to one member of each queue group."""
        plain: list[_MemorySubscription] = []
        groups: dict[str, list[_MemorySubscription]] = {}
        for sub in self.subscriptions:
            if sub.active and subject_matches(sub.subject, subject):
                if sub.queue is None:
                    plain.append(sub)
                else:
                    groups.setdefault(sub.queue, []).append(sub)
        chosen = plain + [random.choice(members) for members in groups.values()]
        for sub in chosen:
            sub.deliver(
                Message(subject=subject, data=data, reply=reply, _respond=self._responder(reply))
            )
        return len(chosen)

    def _responder(self, reply: str | None):  # type: ignore[no-untyped-def]
        async def respond(data: bytes) -> None:
            if len(data) > self.max_payload:
                raise Refused(
                    f"reply of {len(data)} bytes is over the max payload ({self.max_payload} bytes)"
                )
            if reply is not None:
                self.route(reply, data, None)

        return respond


class _MemorySubscription(Subscription):
    def __init__(
        self, broker: MemoryBroker, subject: str, handler: MessageHandler, queue: str | None
    ) -> None:
        self.broker = broker
        self.subject = subject
        self.queue = queue
        self.handler = handler
        self.active = True
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        # One consumer task per subscription: messages are handled one at a time,
        # in order, as nats-py does.
        self._task = guarded(self._consume(), name=f"memory-sub:{subject}", logger=logger)

    def deliver(self, message: Message) -> None:
        self._queue.put_nowait(message)

    async def _consume(self) -> None:
        while (message := await self._queue.get()) is not None:
            try:
                await self.handler(message)
            except Exception:
                logger.exception("handler of subscription %r failed", self.subject)

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            with contextlib.suppress(ValueError):
                self.broker.subscriptions.remove(self)
            self._queue.put_nowait(None)  # drain: what is queued is still handled
            await self._task

    async def abort(self) -> None:
        self.active = False
        with contextlib.suppress(ValueError):
            self.broker.subscriptions.remove(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class MemoryTransport(Transport):
    """One client connection to a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self._subs: list[_MemorySubscription | MemoryConsumerSubscription] = []
        self._closed = False

    @property
    def connected(self) -> bool:
        return not self._closed

    @property
    def max_payload(self) -> int:
        return self.broker.max_payload

    def _check(self, data: bytes = b"") -> None:
        if self._closed:
            raise TransportError("the in-memory transport is closed")
        if len(data) > self.broker.max_payload:
            # As nats-py does: a message over the limit is refused before it is sent.
            raise Refused(
                f"message of {len(data)} bytes is over the max payload "
                f"({self.broker.max_payload} bytes)"
            )

    async def publish(self, subject: str, data: bytes) -> None:
        self._check(data)
        with contextlib.suppress(TransportError):
            # As JetStream does: a stream stores every message on its subjects,
            # also one sent without waiting for the acknowledgement.
            self.broker.stream_of(subject).store(subject, data, None)
        self.broker.route(subject, data, None)

    async def publish_durable(
        self, subject: str, data: bytes, *, msg_id: str | None = None
    ) -> None:
        self._check(data)
        stream = self.broker.stream_of(subject)
        if msg_id is not None and msg_id in stream.stored_ids:
            return  # a retry of a stored event: kept once, as JetStream does
        stream.store(subject, data, msg_id)
        self.broker.route(subject, data, None)

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        self._check(data)
        inbox = self.broker.new_inbox()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_reply(message: Message) -> None:
            if not future.done():
                future.set_result(message.data)

        sub = _MemorySubscription(self.broker, inbox, on_reply, None)
        self.broker.subscriptions.append(sub)
        try:
            if self.broker.route(subject, data, inbox) == 0:
                raise NoResponders(f"no responders on {subject!r}")
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                raise RequestTimeout(f"no reply on {subject!r} within {timeout:g}s") from None
        finally:
            await sub.unsubscribe()

    async def gather(
        self, subject: str, data: bytes, timeout: float, *, expect: int | None = None
    ) -> list[bytes]:
        self._check()
        inbox = self.broker.new_inbox()
        replies: list[bytes] = []
        answered = asyncio.Event()

        async def on_reply(message: Message) -> None:
            replies.append(message.data)
            if expect is not None and len(replies) >= expect:
                answered.set()

        sub = _MemorySubscription(self.broker, inbox, on_reply, None)
        self.broker.subscriptions.append(sub)
        try:
            self.broker.route(subject, data, inbox)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await answered.wait()
        finally:
            await sub.unsubscribe()
        return replies

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        self._check()
        sub = _MemorySubscription(self.broker, subject, handler, queue)
        self.broker.subscriptions.append(sub)
        self._subs.append(sub)
        return sub

    async def history(
        self,
        subject: str,
        *,
        limit: int = 10_000,
        newest: bool = False,
        since: datetime | None = None,
    ) -> list[tuple[str, bytes]]:
        specs = [spec for spec, _ in self.broker.streams.values()]
        matching = [
            (event.subject, event.data)
            for spec, within in reads(specs, subject)  # a wide filter: each stream in turn
            for event in self.broker.streams[spec.name][1].events
            if subject_matches(within, event.subject) and (since is None or event.time >= since)
        ]
        return matching[-limit:] if newest else matching[:limit]

    async def consume(
        self,
        subject: str,
        durable: str,
        handler: StoredHandler,
        *,
        max_age: float | None = None,
        ack_wait: float = 30.0,
        inactive: float | None = None,
    ) -> Subscription:
        self._check()
        stream = self.broker.stream_of(subject)
        consumer = stream.consumer(durable, subject, max_age, ack_wait, inactive)
        sub = MemoryConsumerSubscription(consumer, handler)
        self._subs.append(sub)
        return sub

    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        self._check()
        check_kv_names(bucket)
        state = self.broker.buckets.get(bucket)
        if state is None:
            state = self.broker.buckets[bucket] = MemoryBucket(bucket, ttl)
        elif ttl is not None and (state.ttl is None or state.ttl < ttl):
            state.ttl = ttl  # raised, never cut (see Transport.key_value)
        return MemoryKeyValue(state, self._check)

    async def existing_key_value(self, bucket: str) -> KeyValue | None:
        self._check()
        check_kv_names(bucket)
        state = self.broker.buckets.get(bucket)
        return None if state is None else MemoryKeyValue(state, self._check)

    async def flush(self) -> None:
        # Let consumer tasks run what is already queued.
        await asyncio.sleep(0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    async def abort(self) -> None:
        self._closed = True
        for sub in self._subs:
            await sub.abort()
        self._subs.clear()
