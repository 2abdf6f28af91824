"""The transport contract: subjects and bytes, nothing about agents.

Two implementations keep this contract: :mod:`.nats` (the real one) and
:mod:`.memory` (in one process, for embedding and fast tests). The contract
tests in ``tests/transports`` run the same cases against both, which is what
keeps the in-memory one honest.

Semantics both must have:

- a subscription's handler is called for one message at a time, in order
  (like nats-py); a handler that wants concurrency spawns its own tasks;
- among subscribers that share a queue group, each message goes to one;
- ``request`` fails fast with :class:`NoResponders` when nobody listens and
  with :class:`RequestTimeout` when nobody answers in time;
- ``publish_durable`` returns once the event is stored, and ``history``
  replays stored events in order;
- ``consume`` reads stored events through a durable consumer: each event is
  handed to one consumer of that name at a time, in stream order, and
  acknowledged once its handler returns; an event that is not acknowledged
  (the handler raised, or the process died) is delivered again; a consumer
  that comes back resumes after the last acknowledged event;
- a key-value bucket (:meth:`Transport.key_value`) gives revision-checked
  writes (two writers racing on one revision: exactly one wins), lists its
  current entries, and drops entries ``ttl`` seconds after their last write;
- ``close`` drains (pending messages are handled) and may be called twice;
  ``abort`` drops the connection like a killed process would.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class Durable(NamedTuple):
    """One message for the event stream, as :meth:`Transport.publish_durable_batch` takes it.

    ``msg_id`` makes a resend safe (the stream keeps one copy per id). An
    unconfirmed message (``confirm=False``) is sent without asking for the
    stream's acknowledgement: cheaper, for a copy whose loss costs nothing but
    a slower lookup. Sent before a confirmed one on the same connection, it
    has been processed by the stream once that one is acknowledged.
    """

    subject: str
    data: bytes
    msg_id: str | None = None
    confirm: bool = True


Sent = Callable[[list[BaseException | None]], None]
"""Told that a batch of stream messages is on its way, with each one's error so far."""


class TransportError(Exception):
    """The transport could not do what was asked."""


class NoResponders(TransportError):
    """Nobody subscribes to the subject of a request."""


class RequestTimeout(TransportError):
    """Nobody answered a request in time."""


class Refused(TransportError):
    """The server refused a message for good (too large, no stream): resending cannot help."""


DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default max_payload


class KvConflict(TransportError):
    """A revision-checked write lost: the key exists already, or has moved past the revision."""


@dataclass
class Message:
    """A received message. ``respond`` answers a request (a no-op if there is no reply subject)."""

    subject: str
    data: bytes
    reply: str | None = None
    _respond: Callable[[bytes], Awaitable[None]] | None = field(default=None, repr=False)

    async def respond(self, data: bytes) -> None:
        if self._respond is not None and self.reply:
            await self._respond(data)


@dataclass(frozen=True)
class StoredMessage:
    """An event delivered by a durable consumer.

    ``sequence`` is its position in the stream, ``deliveries`` how many times
    it has been handed out (more than one after a failure or a crash).
    """

    subject: str
    data: bytes
    sequence: int
    deliveries: int
    time: datetime


StoredHandler = Callable[[StoredMessage], Awaitable[None]]


@dataclass(frozen=True)
class KvEntry:
    """A value of a key-value bucket at one revision.

    Revisions grow with every write to the bucket, so a later write always
    has a higher revision than an earlier one (even after the key expired).
    """

    key: str
    value: bytes
    revision: int


_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
_BUCKET = re.compile(r"^[a-zA-Z0-9_-]+$")


def check_kv_names(bucket: str, key: str | None = None) -> None:
    """Refuse bucket and key names that NATS would refuse, naming the bad one."""
    if not _BUCKET.match(bucket):
        raise ValueError(
            f"key-value bucket name {bucket!r} is invalid: use letters, digits, '-' and '_'"
        )
    if key is not None and (not _KEY.match(key) or key.startswith(".") or key.endswith(".")):
        raise ValueError(
            f"key {key!r} of bucket {bucket!r} is invalid: use letters, digits and '-/_=.', "
            "not starting or ending with '.'"
        )


class KeyValue(abc.ABC):
    """One key-value bucket. Writes are durable; ``revision`` makes them conditional."""

    def __init__(self, bucket: str, ttl: float | None) -> None:
        self.bucket = bucket
        self.ttl = ttl

    @abc.abstractmethod
    async def get(self, key: str) -> KvEntry | None:
        """The current entry, or ``None`` if the key was never set, deleted or expired."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes) -> int:
        """Store a value unconditionally; returns its revision."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> int:
        """Store a value only if the key holds none; raises :class:`KvConflict` otherwise."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Store a value only if ``revision`` is the key's latest; else :class:`KvConflict`."""

    @abc.abstractmethod
    async def delete(self, key: str, *, revision: int | None = None) -> None:
        """Remove a key; with ``revision``, only if that is its latest, else :class:`KvConflict`."""

    @abc.abstractmethod
    async def entries(self, under: str | None = None) -> list[KvEntry]:
        """Every current entry, or those whose key starts with ``under`` and a dot; by key.

        For small buckets read whole (the replicas of a namespace, the approvals
        an agent holds): it reads every matching entry in one pass.
        """


MessageHandler = Callable[[Message], Awaitable[None]]


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def unsubscribe(self) -> None:
        """Stop receiving; messages already received are still handled."""

    async def abort(self) -> None:
        """Stop receiving now: the handler of a message in hand is cancelled.

        For a durable consumer that message is not acknowledged, so it is
        delivered again. Subscriptions that hold nothing in hand just unsubscribe.
        """
        await self.unsubscribe()


class Transport(abc.ABC):
    """A connection to a message bus."""

    last_reconnect: float | None = None
    """``time.monotonic()`` when the connection was last restored after a loss, if ever."""

    @property
    def max_payload(self) -> int:
        """The largest message (in bytes) the server accepts."""
        return DEFAULT_MAX_PAYLOAD

    @abc.abstractmethod
    async def publish(self, subject: str, data: bytes) -> None:
        """Send a message to the subject's subscribers, at most once, without waiting."""

    @abc.abstractmethod
    async def publish_durable(
        self, subject: str, data: bytes, *, msg_id: str | None = None
    ) -> None:
        """Send a message and return once the event stream has stored it.

        ``msg_id`` makes a retry safe: the stream keeps one copy per id.
        """

    async def publish_durable_batch(
        self, items: Sequence[Durable], *, sent: Sent | None = None
    ) -> list[BaseException | None]:
        """Store many events; per item, ``None`` or the error.

        For an unconfirmed item the error is only what sending it raised.
        ``sent`` is called once every item is on its way (handed to the
        connection, in order, ahead of anything published after the call),
        before the acknowledgements come, with the errors known by then. The
        default stores the items one by one; a transport may pipeline them.
        """
        errors: list[BaseException | None] = []
        for item in items:
            try:
                await self.publish_durable(item.subject, item.data, msg_id=item.msg_id)
                errors.append(None)
            except TransportError as exc:
                errors.append(exc)
        if sent is not None:
            sent(errors)
        return errors

    @abc.abstractmethod
    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """Send a request and wait for the first reply."""

    @abc.abstractmethod
    async def gather(
        self, subject: str, data: bytes, timeout: float, *, expect: int | None = None
    ) -> list[bytes]:
        """Send a request to every subscriber and collect replies for ``timeout`` seconds.

        With ``expect`` (how many responders the caller knows of), return as
        soon as that many replies arrived; ``timeout`` still bounds the wait.
        """

    @abc.abstractmethod
    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        """Receive messages on a subject (wildcards ``*`` and ``>`` allowed)."""

    @abc.abstractmethod
    async def history(
        self,
        subject: str,
        *,
        limit: int = 10_000,
        newest: bool = False,
        since: datetime | None = None,
    ) -> list[tuple[str, bytes]]:
        """Stored events on subjects matching ``subject``, oldest first, at most ``limit``.

        The server filters by subject before ``limit`` counts. ``newest`` keeps the
        last ``limit`` matching events instead of the first; ``since`` only those
        stored at or after that time.
        """

    @abc.abstractmethod
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
        """Receive stored events on ``subject`` through the durable consumer ``durable``.

        The consumer is created on first use, starting at the first stored event
        at most ``max_age`` seconds old (the stream's first event if ``None``);
        later calls with the same name resume it and ignore ``max_age``. Every
        consumer bound to one name shares its events: one event is out at a
        time, in stream order, and it is acknowledged when ``handler`` returns.
        If ``handler`` raises, the event is delivered again after a short
        delay; if the consumer disappears with an event unacknowledged, the
        event is delivered again ``ack_wait`` seconds after it was handed out
        (while a handler runs, the transport tells the server it is alive).
        A consumer nobody used for ``inactive`` seconds is forgotten, so its
        next use starts afresh.
        """

    @abc.abstractmethod
    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        """A key-value bucket, created if missing; entries expire ``ttl`` seconds after a write.

        ``ttl=None`` keeps entries for ever on creation and leaves an existing
        bucket as it is. A number is a floor, never a cut: an existing bucket with
        a shorter age limit (or none yet, made by a reader that came first) gets
        ``ttl``; one with a longer limit keeps it. Agents of one namespace share
        buckets (leases, budgets) with their own settings, and one agent's short
        ``ttl`` must not expire the entries another relies on: a lease gone before
        its holder steps down would let two replicas lead.
        """

    @abc.abstractmethod
    async def existing_key_value(self, bucket: str) -> KeyValue | None:
        """The bucket if it exists, else ``None``; never creates one.

        For readers: a command pointed at a mistyped namespace must not leave a
        bucket behind, and a user allowed to read a bucket may not be allowed to
        make one.
        """

    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        """A value of the durable key-value store, or ``None``."""
        entry = await (await self.key_value(bucket)).get(key)
        return entry.value if entry is not None else None

    async def kv_put(self, bucket: str, key: str, value: bytes) -> None:
        """Store a value durably."""
        await (await self.key_value(bucket)).put(key, value)

    # Shorthands over key_value() for callers that need no revisions.

    async def kv_create(self, bucket: str, key: str, value: bytes) -> bool:
        """Store a value only if the key has none; ``False`` (nothing written) if it has one."""
        try:
            await (await self.key_value(bucket)).create(key, value)
        except KvConflict:
            return False
        return True

    async def kv_delete(self, bucket: str, key: str) -> None:
        """Remove a key (no error if it has no value); :meth:`kv_create` may then set it again."""
        await (await self.key_value(bucket)).delete(key)

    async def kv_configure(self, bucket: str, *, ttl: float) -> None:
        """Declare that keys of ``bucket`` live ``ttl`` seconds after their last write."""
        await self.key_value(bucket, ttl=ttl)

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until everything published so far has reached the server."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Drain subscriptions and disconnect. Idempotent."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Disconnect at once: nothing drained, nothing acknowledged, as if the process died."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the transport can currently send."""


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token != "*" and token != subject_tokens[index]:
            return False
    return len(pattern_tokens) == len(subject_tokens)
