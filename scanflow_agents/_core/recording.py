"""Recording: every observation, decision and action becomes an event in the stream.

Events go to the namespace's JetStream stream (durable, replayable: the audit
trail and the console's history) and to any extra sinks, such as the MLflow
recorder. Nothing is dropped to make room:

- the backlog is bounded; when it is full, sensors and rules wait for room
  and new actuator calls are refused with ``busy`` (see the dispatcher), so
  a burst slows the agent down instead of losing its records;
- an event that cannot fit in one message (over the server's max payload) is
  stored with its largest values replaced by a digest and the flag
  ``truncated``, instead of being retried forever;
- an event the stream refuses for good is dropped with an ERROR naming it,
  and whoever waits for it (a call's reply) is told.

If the stream cannot take an event for a while (NATS down), it stays queued
and is sent again under its message id, so the stream keeps one copy.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic_core import to_jsonable_python

from scanflow_agents._core import wire
from scanflow_agents._core.indexing import chain_entry
from scanflow_agents.messages import Envelope
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Durable, Refused, Transport

logger = logging.getLogger("scanflow_agents.recording")

BACKLOG_LIMIT = 10_000
BATCH = 256
# Room left in a message for the subject and the Nats-Msg-Id header.
HEADROOM = 1024
# How much of a truncated value is kept as a preview.
PREVIEW = 256


class NotStored(Exception):
    """An event could not be stored yet; it stays queued and is sent again."""


class Sink(Protocol):
    """Something that keeps a copy of every event (e.g. MLflow). ``record`` must not block."""

    def record(self, event: dict[str, Any]) -> None: ...


def jsonable(value: Any) -> Any:
    """A JSON-safe form of any handler result (numpy scalars, models, dates...)."""
    return to_jsonable_python(value, fallback=repr)


def event_record(envelope: Envelope, kind: str, name: str) -> dict[str, Any]:
    """The flat form of an event that sinks and history queries use."""
    return {
        "id": envelope.id,
        "kind": kind,
        "agent": envelope.source,
        "name": name,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "time": envelope.time.isoformat(),
        "payload": envelope.payload,
    }


def digest(blob: bytes) -> dict[str, Any]:
    """What stands in for a value too large to keep: its size, SHA-256 and first bytes."""
    return {
        "truncated": True,
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "preview": blob[:PREVIEW].decode(errors="replace"),
    }


def shrink(payload: Any, budget: int) -> Any:
    """``payload`` with its largest values replaced by digests until it fits in ``budget`` bytes.

    The result is a mapping whose ``truncated`` key lists what was replaced.
    """
    value = dict(payload) if isinstance(payload, dict) else {"value": payload}
    blobs = {key: _dumps(item) for key, item in value.items()}
    replaced: list[str] = []
    for key in sorted(blobs, key=lambda k: len(blobs[k]), reverse=True):
        if len(_dumps(value)) + 64 <= budget:
            break
        value[key] = digest(blobs[key])
        replaced.append(key)
    value["truncated"] = replaced
    if len(_dumps(value)) > budget:  # too many keys: one digest of the whole
        value = {"truncated": ["*"], "value": digest(_dumps(payload))}
    return value


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


Until = Literal["stored", "sent"]
"""What a tracked event's future waits for: the stream's acknowledgement, or the
event being on its way to the server (written to the connection, ahead of
anything published after it)."""


@dataclass(slots=True)
class _Pending:
    subject: str
    data: bytes
    msg_id: str
    stored: asyncio.Future[None] | None
    index_copy: bool = False
    until: Until = "stored"


class Recorder:
    """Publishes one agent's events and hands copies to the sinks.

    :meth:`enqueue` returns at once: events wait in a queue that one guarded
    task (:meth:`run`) stores in pipelined batches (one round trip for many
    events); a caller that must know its event is stored awaits the future it
    gets. Events keep their order. A stopping agent flushes the queue before
    it disconnects.
    """

    def __init__(
        self,
        agent: str,
        transport: Transport,
        subjects: Subjects,
        sinks: list[Sink],
        *,
        limit: int = BACKLOG_LIMIT,
        timeout: float = 5.0,
        index: bool = True,
    ) -> None:
        self.agent = agent
        self.transport = transport
        self.subjects = subjects
        self.sinks = sinks
        self.limit = limit
        self.timeout = timeout
        self.index = index  # also store each event's chain-index copy (see indexing.py)
        self.backlog: deque[_Pending] = deque()
        self.counts: dict[str, int] = {}
        self.truncated = 0
        self.refused = 0
        self.index_dropped = 0
        self.sending = 0  # events taken from the backlog, waiting for their acknowledgement
        # Why the stream cannot store events now (from the last attempt), or None:
        # what settings.agent.unrecorded='refuse' refuses new calls on.
        self.unstored: str | None = None
        self.retry_interval = 1.0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def full(self) -> bool:
        """Whether the backlog is at its limit (new calls are refused until it drains)."""
        return len(self.backlog) >= 2 * self.limit  # each event is queued with its chain copy

    async def record(
        self,
        kind: str,
        name: str,
        payload: dict[str, Any],
        *,
        correlation_id: str,
        causation_id: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """Record one event of ``kind`` (observation, decision, action) by handler ``name``.

        Waits while the backlog is full: a sensor or rule is slowed down, its
        record is not dropped. Returns the event as stored. An ``event_id``
        chosen by the caller makes a second record of the same event (within
        the stream's duplicate window) a no-op.
        """
        await self.room()
        value, _ = self.enqueue(
            kind,
            name,
            payload,
            correlation_id=correlation_id,
            causation_id=causation_id,
            event_id=event_id,
        )
        return Envelope.model_construct(
            v=value["v"],
            id=value["id"],
            kind="event",
            source=self.agent,
            target=name,
            correlation_id=correlation_id,
            causation_id=causation_id,
            time=datetime.fromisoformat(value["time"]),
            payload=value.get("payload"),
        )

    def enqueue(
        self,
        kind: str,
        name: str,
        payload: dict[str, Any],
        *,
        correlation_id: str,
        causation_id: str | None = None,
        track: bool = False,
        until: Until = "stored",
        event_id: str | None = None,
    ) -> tuple[dict[str, Any], asyncio.Future[None] | None]:
        """Queue one event even if the backlog is full; with ``track``, a future set once stored.

        With ``until="sent"`` the future is set as soon as the event is on its
        way to the server instead; the recorder still waits for the stream's
        acknowledgement and sends it again until it comes. Returns the event's
        envelope as a mapping (as queued, shrunk if it had to be). The
        dispatcher uses this for calls it already admitted (at most the
        in-flight limit beyond the backlog's).
        """
        value = wire.envelope(
            "event",
            self.agent,
            jsonable(payload),
            target=name,
            correlation_id=correlation_id,
            causation_id=causation_id,
            id=event_id,
        )
        self.counts[kind] = self.counts.get(kind, 0) + 1
        subject = self.subjects.event(f"{kind}.{self.agent}.{name}")
        stored = self._queue(subject, value, wire.dumps(value), track, until)
        if self.sinks:
            record = {
                "id": value["id"],
                "kind": kind,
                "agent": self.agent,
                "name": name,
                "correlation_id": correlation_id,
                "causation_id": causation_id,
                "time": value["time"],
                "payload": value["payload"],
            }
            for sink in self.sinks:
                # A sink is a copy on the side (MLflow, a test's list): its failure must
                # neither lose the event for the stream nor fail the handler that records it.
                try:
                    sink.record(record)
                except Exception:
                    logger.exception("sink %r of agent %r refused an event", sink, self.agent)
        return value, stored

    async def room(self) -> None:
        """Wait until the backlog is below its limit."""
        # A loop, not one wait: the waiters wake together, and the first of them may
        # fill the backlog again before the others run.
        while self.full:
            self._room.clear()
            await self._room.wait()

    def publish(self, subject: str, envelope: Envelope) -> None:
        """Queue an event built elsewhere (``Agent.emit``) for the stream."""
        value = envelope.model_dump(mode="json", exclude_none=True)
        self._queue(subject, value, wire.dumps(value), False)

    def _queue(
        self, subject: str, value: dict[str, Any], data: bytes, track: bool, until: Until = "stored"
    ) -> asyncio.Future[None] | None:
        """Append one encoded event to the backlog, shrunk first if it cannot fit."""
        budget = self.transport.max_payload - HEADROOM - len(subject)
        # Shrunk rather than refused: the stream would refuse the whole event, and an
        # audit trail with a digest in place of a huge value beats one with a gap.
        if len(data) > budget:
            original = len(data)
            fields = original - len(_dumps(value.get("payload")))  # the envelope's own size
            value["payload"] = shrink(value.get("payload"), budget - fields)
            data = wire.dumps(value)
            if len(data) > budget:  # the envelope's own fields are huge: keep only a flag
                value["payload"] = {"truncated": ["*"]}
                data = wire.dumps(value)
            self.truncated += 1
            logger.warning(
                "agent %r: event %s on %s is %d bytes, over the max payload (%d); "
                "stored with its largest values replaced by digests",
                self.agent,
                value["id"],
                subject,
                original,
                self.transport.max_payload,
            )
        future = asyncio.get_running_loop().create_future() if track else None
        # The chain index (see indexing.py): a copy under the chain's subject, in
        # the same pipelined batch, so `history --correlation` needs no scan.
        # It goes first and unconfirmed: the stream processes one connection's
        # messages in order, so the event's acknowledgement covers its copy too,
        # and the copy costs no acknowledgement of its own. Whoever waits for
        # the event waits for the event itself.
        if self.index:
            copy_subject, copy, copy_id = chain_entry(
                self.subjects, subject, data, value["correlation_id"], value["id"]
            )
            self.backlog.append(_Pending(copy_subject, copy, copy_id, None, index_copy=True))
        # The event after its copy: whoever waits for the event is released by its
        # acknowledgement, which then covers the copy as well.
        self.backlog.append(_Pending(subject, data, value["id"], future, until=until))
        self._idle.clear()
        self._wake.set()
        return future

    async def run(self) -> None:
        """Store queued events until cancelled (the runtime runs this as a guarded task)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.backlog:
                # In batches: one round trip has the stream acknowledge up to BATCH events.
                batch = [self.backlog.popleft() for _ in range(min(BATCH, len(self.backlog)))]
                self.sending = len(batch)
                try:
                    # Bounded: a server that never acknowledges must not hold the recorder
                    # forever; the batch is then sent again.
                    async with asyncio.timeout(self.timeout):
                        errors = await self.transport.publish_durable_batch(
                            [
                                Durable(item.subject, item.data, item.msg_id, not item.index_copy)
                                for item in batch
                            ],
                            sent=functools.partial(_on_the_way, batch),
                        )
                except Exception as exc:  # the connection closed under us, no ack in time, ...
                    errors = [exc] * len(batch)
                retry: list[_Pending] = []
                for item, error in zip(batch, errors, strict=True):
                    if error is None:
                        _settle(item.stored, None)
                    elif isinstance(error, Refused):
                        self._refused(item, error)
                    else:
                        # Whoever waits is told now (the caller's reply says so);
                        # the event itself stays queued.
                        _settle(item.stored, NotStored(f"{type(error).__name__}: {error}"))
                        item.stored = None
                        retry.append(item)
                self.sending = 0
                if not retry:
                    self.unstored = None
                # Room as soon as a batch is out of the backlog, not once it is stored:
                # writers wait only while the backlog itself is full.
                if not self.full:
                    self._room.set()
                if retry and len(retry) < len(batch) and all(i.index_copy for i in retry):
                    retry = self._index_refused(retry)
                if retry:
                    self.unstored = _describe(next(e for e in errors if e))
                    # Back at the head, in order; their ids make the resend safe.
                    self.backlog.extendleft(reversed(retry))
                    logger.warning(
                        "agent %r could not store %d event(s) in the stream: %s; retrying in %g s",
                        self.agent,
                        len(retry),
                        _describe(next(e for e in errors if e)),
                        self.retry_interval,
                    )
                    # A pause before sending again: a stream without a leader or a closed
                    # connection fails at once, and a tight loop would only spin and log.
                    await asyncio.sleep(self.retry_interval)
            # Idle only with the backlog empty: flush(), and with it stop(), waits for this.
            self._room.set()
            self._idle.set()

    def _index_refused(self, copies: list[_Pending]) -> list[_Pending]:
        # The events themselves were stored, only their chain-index copies were
        # not: the stream does not hold the index's subjects (configured without
        # them). Holding every later record back for an index would make
        # callers wait; the copies are dropped, with a warning now and then.
        self.index_dropped += len(copies)
        if self.index_dropped == len(copies) or self.index_dropped % 1000 < len(copies):
            logger.warning(
                "agent %r: the stream does not store the chain index (%s); %d index "
                "copies dropped so far, the events themselves are stored",
                self.agent,
                copies[0].subject,
                self.index_dropped,
            )
        return []

    def _refused(self, item: _Pending, error: BaseException) -> None:
        # Resending cannot help (the stream said no): waiting would block every
        # later event behind this one.
        self.refused += 1
        logger.error(
            "agent %r dropped event %s on %s (%d bytes): the stream refused it: %s",
            self.agent,
            item.msg_id,
            item.subject,
            len(item.data),
            error,
        )
        _settle(item.stored, error)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is stored; ``False`` if some were not in time."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            logger.error(
                "agent %r stops with %d event(s) not stored in the stream",
                self.agent,
                len(self.backlog) + self.sending,
            )
            return False
        return True


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _on_the_way(batch: list[_Pending], errors: list[BaseException | None]) -> None:
    """Release whoever waits only for its event to be sent (its ack comes later)."""
    for item, error in zip(batch, errors, strict=True):
        if item.until == "sent" and error is None:
            _settle(item.stored, None)


def _settle(future: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # retrieved: a caller that gave up waiting does not warn
