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

logger = logging.getLogger(__name__)


class MemoryBroker:
    """The shared state of an in-memory bus: subscriptions, the event stream, the KV buckets."""

    def __init__(
        self, *, stream_subjects: tuple[str, ...] = ("scanflow.*.events.>", "scanflow.*.chains.>")
    ) -> None:
        self.stream_subjects = stream_subjects
        self.subscriptions: list[_MemorySubscription] = []
        self.events = MemoryStream()
        self.buckets: dict[str, MemoryBucket] = {}
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self._inboxes = itertools.count()

    @property
    def stream(self) -> list[tuple[str, bytes]]:
        """The stored events as ``(subject, data)``, oldest first."""
        return [(event.subject, event.data) for event in self.events.events]

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
        if self._stored(subject):
            # As JetStream does: a stream stores every message on its subjects,
            # also one sent without waiting for the acknowledgement.
            self.broker.events.store(subject, data, None)
        self.broker.route(subject, data, None)

    def _stored(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self.broker.stream_subjects)

    async def publish_durable(
        self, subject: str, data: bytes, *, msg_id: str | None = None
    ) -> None:
        self._check(data)
        if not self._stored(subject):
            raise TransportError(f"no event stream stores subject {subject!r}")
        if msg_id is not None and msg_id in self.broker.events.stored_ids:
            return  # a retry of a stored event: kept once, as JetStream does
        self.broker.events.store(subject, data, msg_id)
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
                return await asyncio.wait_for(future, timeout)
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
                await asyncio.wait_for(answered.wait(), timeout)
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
        matching = [
            (event.subject, event.data)
            for event in self.broker.events.events
            if subject_matches(subject, event.subject) and (since is None or event.time >= since)
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
        consumer = self.broker.events.consumer(durable, subject, max_age, ack_wait, inactive)
        sub = MemoryConsumerSubscription(consumer, handler)
        self._subs.append(sub)
        return sub

    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        self._check()
        check_kv_names(bucket)
        state = self.broker.buckets.get(bucket)
        if state is None:
            state = self.broker.buckets[bucket] = MemoryBucket(bucket, ttl)
        elif ttl is not None:
            state.ttl = ttl
        return MemoryKeyValue(state, self._check)

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
