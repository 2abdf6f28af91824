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

from scanflow_agents.messages import Envelope
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Transport, TransportError

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
    """Publishes one agent's events and hands copies to the sinks."""

    def __init__(
        self, agent: str, transport: Transport, subjects: Subjects, sinks: list[Sink]
    ) -> None:
        self.agent = agent
        self.transport = transport
        self.subjects = subjects
        self.sinks = sinks
        self.backlog: deque[tuple[str, bytes]] = deque(maxlen=BACKLOG_LIMIT)
        self.counts: dict[str, int] = {}
        self._catching_up = asyncio.Lock()

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
        await self.publish(self.subjects.event(f"{kind}.{self.agent}.{name}"), envelope.encode())
        if self.sinks:
            record = event_record(envelope, kind, name)
            for sink in self.sinks:
                try:
                    sink.record(record)
                except Exception:
                    logger.exception("sink %r of agent %r refused an event", sink, self.agent)
        return envelope

    async def publish(self, subject: str, data: bytes) -> None:
        """Publish durably; on failure keep the event for the next attempt.

        The common case (no backlog) publishes concurrently with other handlers;
        only the catch-up after an outage is serialised, so events keep their order.
        """
        if self.backlog:
            self.backlog.append((subject, data))
            await self.catch_up()
            return
        try:
            await self.transport.publish_durable(subject, data)
        except TransportError as exc:
            self.backlog.append((subject, data))
            logger.warning(
                "agent %r could not store an event in the stream: %s; kept for retry",
                self.agent,
                exc,
            )

    async def catch_up(self) -> None:
        if self._catching_up.locked():
            return  # the running catch-up will send what was just queued
        async with self._catching_up:
            try:
                while self.backlog:
                    subject, data = self.backlog[0]
                    await self.transport.publish_durable(subject, data)
                    self.backlog.popleft()
            except TransportError as exc:
                logger.warning(
                    "agent %r still cannot store %d event(s): %s",
                    self.agent,
                    len(self.backlog),
                    exc,
                )
