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
- ``close`` drains (pending messages are handled) and may be called twice.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime


class TransportError(Exception):
    """The transport could not do what was asked."""


class NoResponders(TransportError):
    """Nobody subscribes to the subject of a request."""


class RequestTimeout(TransportError):
    """Nobody answered a request in time."""


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


MessageHandler = Callable[[Message], Awaitable[None]]


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def unsubscribe(self) -> None:
        """Stop receiving; messages already received are still handled."""


class Transport(abc.ABC):
    """A connection to a message bus."""

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
        self, items: Sequence[tuple[str, bytes, str | None]]
    ) -> list[BaseException | None]:
        """Store many ``(subject, data, msg_id)`` events; per item, ``None`` or the error.

        The default stores them one by one; a transport may pipeline them.
        """
        errors: list[BaseException | None] = []
        for subject, data, msg_id in items:
            try:
                await self.publish_durable(subject, data, msg_id=msg_id)
                errors.append(None)
            except TransportError as exc:
                errors.append(exc)
        return errors

    @abc.abstractmethod
    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """Send a request and wait for the first reply."""

    @abc.abstractmethod
    async def gather(self, subject: str, data: bytes, timeout: float) -> list[bytes]:
        """Send a request to every subscriber and collect replies for ``timeout`` seconds."""

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
    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        """A value of the durable key-value store, or ``None``."""

    @abc.abstractmethod
    async def kv_put(self, bucket: str, key: str, value: bytes) -> None:
        """Store a value durably."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until everything published so far has reached the server."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Drain subscriptions and disconnect. Idempotent."""

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
