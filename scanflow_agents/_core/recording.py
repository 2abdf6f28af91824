"""Recording: every observation, decision and action becomes an event in the stream.

Events go to the namespace's JetStream stream (durable, replayable: the audit
trail and the console's history) and to any extra sinks, such as the MLflow
recorder. If the stream cannot take an event (NATS down), the event waits in
a bounded backlog and is sent before the next one, so an outage delays the
record instead of losing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

from pydantic_core import to_jsonable_python

from scanflow_agents._core.indexing import chain_entry
from scanflow_agents.messages import Envelope
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Transport

logger = logging.getLogger("scanflow_agents.recording")

BACKLOG_LIMIT = 10_000


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


class Recorder:
    """Publishes one agent's events and hands copies to the sinks.

    ``record`` returns at once: events wait in a queue that one guarded task
    (:meth:`run`) stores in pipelined batches, so an actuator call does not pay
    a JetStream round trip for its audit record. Events keep their order; if
    the stream cannot take them (NATS down), they stay queued (at most
    ``BACKLOG_LIMIT``, the oldest dropped with an error beyond that) and are
    sent again, under their message id so the stream keeps one copy. A stopping
    agent flushes the queue before it disconnects.
    """

    def __init__(
        self, agent: str, transport: Transport, subjects: Subjects, sinks: list[Sink]
    ) -> None:
        self.agent = agent
        self.transport = transport
        self.subjects = subjects
        self.sinks = sinks
        self.backlog: deque[tuple[str, bytes, str]] = deque()
        self.counts: dict[str, int] = {}
        self.dropped = 0
        self.retry_interval = 1.0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    async def record(
        self,
        kind: str,
        name: str,
        payload: dict[str, Any],
        *,
        correlation_id: str,
        causation_id: str | None = None,
    ) -> Envelope:
        """Record one event of ``kind`` (observation, decision, action) by handler ``name``."""
        envelope = Envelope(
            kind="event",
            source=self.agent,
            target=name,
            correlation_id=correlation_id,
            causation_id=causation_id,
            payload=jsonable(payload),
        )
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.publish(self.subjects.event(f"{kind}.{self.agent}.{name}"), envelope)
        if self.sinks:
            record = event_record(envelope, kind, name)
            for sink in self.sinks:
                try:
                    sink.record(record)
                except Exception:
                    logger.exception("sink %r of agent %r refused an event", sink, self.agent)
        return envelope

    def publish(self, subject: str, envelope: Envelope) -> None:
        """Queue an event for the stream; :meth:`run` stores it."""
        data = envelope.encode()
        self.backlog.append((subject, data, envelope.id))
        # The chain index (see indexing.py): a copy under the chain's subject, in
        # the same pipelined batch, so `history --correlation` needs no scan.
        self.backlog.append(
            chain_entry(self.subjects, subject, data, envelope.correlation_id, envelope.id)
        )
        if len(self.backlog) > BACKLOG_LIMIT:
            self.backlog.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "agent %r dropped %d event(s): the stream has not taken them and the "
                    "queue is full (%d)", self.agent, self.dropped, BACKLOG_LIMIT,
                )  # fmt: skip
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """Store queued events until cancelled (the runtime runs this as a guarded task)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.backlog:
                batch = [self.backlog.popleft() for _ in range(min(256, len(self.backlog)))]
                try:
                    errors = await self.transport.publish_durable_batch(batch)
                except Exception as exc:  # the connection closed under us, ...
                    errors = [exc] * len(batch)
                failed = [item for item, error in zip(batch, errors, strict=True) if error]
                if failed:
                    # Back at the head, in order; their ids make the resend safe.
                    self.backlog.extendleft(reversed(failed))
                    logger.warning(
                        "agent %r could not store %d event(s) in the stream: %s; retrying in %g s",
                        self.agent, len(failed), next(e for e in errors if e), self.retry_interval,
                    )  # fmt: skip
                    await asyncio.sleep(self.retry_interval)
            self._idle.set()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is stored; ``False`` if some were not in time."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            logger.error(
                "agent %r stops with %d event(s) not stored in the stream",
                self.agent,
                len(self.backlog),
            )
            return False
        return True
