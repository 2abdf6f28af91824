"""The in-memory stand-ins for JetStream: the event stream, durable consumers, key-value buckets.

They keep the contract of :mod:`.base` the way JetStream does, so the same
contract tests pass on both: a durable consumer hands out one event at a
time in stream order and takes it back when it is not acknowledged in time;
a bucket's revisions grow with every write and a conditional write loses
when another got there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scanflow_agents._kit import clocks
from scanflow_agents._kit.tasks import guarded
from scanflow_agents.transports.base import (
    KeyValue,
    KvConflict,
    KvEntry,
    StoredHandler,
    StoredMessage,
    Subscription,
    TransportError,
    check_kv_names,
    subject_matches,
)

logger = logging.getLogger(__name__)

# How long a failed event waits before it is handed out again (JetStream: a delayed nak).
RETRY_DELAY = 1.0


@dataclass(frozen=True)
class StoredEvent:
    sequence: int
    subject: str
    data: bytes
    time: datetime


class _Signal:
    """Wakes every waiter once per :meth:`fire`; waiters take :attr:`event` before checking."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


class MemoryStream:
    """Stored events and the durable consumers reading them.

    Args:
        max_bytes: bytes of event data kept at most; beyond it the oldest
            events are dropped, as a JetStream stream with a size limit and
            the "discard old" policy does. ``None``: no limit.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.events: list[StoredEvent] = []
        self.stored_ids: set[str] = set()
        self.consumers: dict[str, MemoryConsumer] = {}
        self.signal = _Signal()
        self.max_bytes = max_bytes
        self.bytes = 0
        self._last_sequence = 0

    def store(self, subject: str, data: bytes, msg_id: str | None) -> None:
        if msg_id is not None:
            if msg_id in self.stored_ids:
                return  # a retry of a stored event: kept once, as JetStream does
            self.stored_ids.add(msg_id)
        self._last_sequence += 1
        self.events.append(StoredEvent(self._last_sequence, subject, data, datetime.now(UTC)))
        self.bytes += len(data)
        while self.max_bytes is not None and self.bytes > self.max_bytes and self.events:
            self.bytes -= len(self.events.pop(0).data)
        self.signal.fire()

    def first_after(self, sequence: int, subject: str) -> StoredEvent | None:
        """The first event at ``sequence`` or later whose subject matches ``subject``."""
        # Sequences are contiguous from the oldest event kept (older ones may be dropped).
        first = self.events[0].sequence if self.events else self._last_sequence + 1
        for event in self.events[max(sequence - first, 0) :]:
            if subject_matches(subject, event.subject):
                return event
        return None

    def consumer(
        self,
        durable: str,
        subject: str,
        max_age: float | None,
        ack_wait: float,
        inactive: float | None,
    ) -> MemoryConsumer:
        """The consumer of that name: resumed, or created at the first event under ``max_age``."""
        existing = self.consumers.get(durable)
        if existing is not None and existing.expired():
            del self.consumers[durable]
            existing = None
        if existing is not None:
            if existing.subject != subject:
                raise TransportError(
                    f"durable consumer {durable!r} reads {existing.subject!r}, not {subject!r}"
                )
            return existing
        start = 1
        if max_age is not None:
            start_time = datetime.now(UTC) - timedelta(seconds=max_age)
            later = [e.sequence for e in self.events if e.time >= start_time]
            start = later[0] if later else self._last_sequence + 1
        created = MemoryConsumer(self, durable, subject, start, ack_wait, inactive)
        self.consumers[durable] = created
        return created


@dataclass
class _Out:
    """The one event a consumer has handed out and not yet had acknowledged."""

    event: StoredEvent
    deliveries: int
    deadline: float  # monotonic time after which it goes out again


class MemoryConsumer:
    """A durable consumer: a position in the stream and at most one event out."""

    def __init__(
        self,
        stream: MemoryStream,
        durable: str,
        subject: str,
        start: int,
        ack_wait: float,
        inactive: float | None,
    ) -> None:
        self.stream = stream
        self.durable = durable
        self.subject = subject
        self.next_sequence = start
        self.ack_wait = ack_wait
        self.inactive = inactive
        self.out: _Out | None = None
        self.bound = 0
        self.last_active = clocks.now()

    def expired(self) -> bool:
        idle = clocks.now() - self.last_active
        return self.bound == 0 and self.inactive is not None and idle > self.inactive

    async def take(self) -> StoredMessage:
        """Wait for the next event to hand out: one whose delivery lapsed, else a new one."""
        while True:
            wake = self.stream.signal.event
            now = clocks.now()
            self.last_active = now
            timeout: float | None = None
            if self.out is not None:
                if self.out.deadline <= now:
                    self.out.deliveries += 1
                    self.out.deadline = float("inf")  # held while its handler runs
                    return self._message(self.out)
                timeout = self.out.deadline - now
            else:
                event = self.stream.first_after(self.next_sequence, self.subject)
                if event is not None:
                    self.next_sequence = event.sequence + 1
                    self.out = _Out(event, 1, float("inf"))
                    return self._message(self.out)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()

    @staticmethod
    def _message(out: _Out) -> StoredMessage:
        event = out.event
        return StoredMessage(event.subject, event.data, event.sequence, out.deliveries, event.time)

    def settle(self, sequence: int, *, retry_in: float | None) -> None:
        """Acknowledge the event (``retry_in=None``) or hand it out again after ``retry_in`` s."""
        if self.out is None or self.out.event.sequence != sequence:
            return  # it lapsed and went to another consumer meanwhile
        if retry_in is None:
            self.out = None
        else:
            self.out.deadline = clocks.now() + retry_in
        self.last_active = clocks.now()
        self.stream.signal.fire()


class MemoryConsumerSubscription(Subscription):
    """One binding to a durable consumer: a task that takes, handles and settles events."""

    def __init__(self, consumer: MemoryConsumer, handler: StoredHandler) -> None:
        self.consumer = consumer
        self.handler = handler
        self.active = True
        self._handling = False
        consumer.bound += 1
        self._task = guarded(self._run(), name=f"memory-consumer:{consumer.durable}", logger=logger)

    async def _run(self) -> None:
        consumer = self.consumer
        while self.active:
            message = await consumer.take()
            self._handling = True
            try:
                await self.handler(message)
            except asyncio.CancelledError:
                # Killed mid-event: nobody acknowledges it, so it goes out again
                # once its acknowledgement time is up, as on a real server.
                consumer.settle(message.sequence, retry_in=consumer.ack_wait)
                raise
            except Exception:
                logger.exception(
                    "handler of durable consumer %r failed; the event is delivered again",
                    consumer.durable,
                )
                consumer.settle(message.sequence, retry_in=RETRY_DELAY)
            else:
                consumer.settle(message.sequence, retry_in=None)
            finally:
                self._handling = False

    async def unsubscribe(self) -> None:
        if not self.active:
            return
        self.active = False
        self.consumer.bound -= 1
        if not self._handling:
            self._task.cancel()  # waiting for an event: nothing to finish
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def abort(self) -> None:
        if self.active:
            self.active = False
            self.consumer.bound -= 1
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class _Value:
    value: bytes
    revision: int
    written: float  # on the loop's clock (_kit/clocks.py)


class MemoryBucket:
    """The state of one key-value bucket, shared by every connection to the broker."""

    def __init__(self, name: str, ttl: float | None) -> None:
        self.name = name
        self.ttl = ttl
        self.values: dict[str, _Value] = {}
        self.revision = 0

    def current(self, key: str) -> _Value | None:
        value = self.values.get(key)
        if value is None or self.ttl is None:
            return value
        if clocks.now() - value.written >= self.ttl:
            del self.values[key]
            return None
        return value

    def write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.values[key] = _Value(value, self.revision, clocks.now())
        return self.revision


class MemoryKeyValue(KeyValue):
    """A connection's view of a :class:`MemoryBucket`."""

    def __init__(self, bucket: MemoryBucket, check: object) -> None:
        super().__init__(bucket.name, bucket.ttl)
        self._bucket = bucket
        self._check = check  # raises if the connection is closed

    def _ready(self, key: str | None) -> MemoryBucket:
        self._check()  # type: ignore[operator]
        check_kv_names(self.bucket, key)
        return self._bucket

    async def get(self, key: str) -> KvEntry | None:
        current = self._ready(key).current(key)
        return KvEntry(key, current.value, current.revision) if current is not None else None

    async def put(self, key: str, value: bytes) -> int:
        return self._ready(key).write(key, value)

    async def create(self, key: str, value: bytes) -> int:
        bucket = self._ready(key)
        current = bucket.current(key)
        if current is not None:
            raise KvConflict(
                f"key {key!r} of bucket {self.bucket!r} exists (revision {current.revision})"
            )
        return bucket.write(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        bucket = self._ready(key)
        self._expect(bucket, key, revision)
        return bucket.write(key, value)

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        bucket = self._ready(key)
        if revision is not None:
            self._expect(bucket, key, revision)
        bucket.revision += 1  # a delete is a write too, as in JetStream
        bucket.values.pop(key, None)

    async def entries(self, under: str | None = None) -> list[KvEntry]:
        bucket = self._ready(None)
        if under is not None:
            check_kv_names(self.bucket, under)
        found = []
        for key in sorted(bucket.values):
            current = bucket.current(key)
            if current is not None and (under is None or key.startswith(f"{under}.")):
                found.append(KvEntry(key, current.value, current.revision))
        return found

    def _expect(self, bucket: MemoryBucket, key: str, revision: int) -> None:
        current = bucket.current(key)
        latest = current.revision if current is not None else None
        if latest != revision:
            raise KvConflict(
                f"key {key!r} of bucket {self.bucket!r} is at revision {latest}, not {revision}"
            )
