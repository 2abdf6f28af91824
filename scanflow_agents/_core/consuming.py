"""Rules and event sensors read the event stream through durable consumers.

Every event a rule or an event sensor listens to is stored in the
namespace's stream before anyone sees it. The agent reads it back through one
durable consumer per topic pattern, named after the agent and the pattern, so
that a restarted agent (or the next leader) resumes where the last one left:

- one event at a time per pattern, in the order they were stored; the event
  is acknowledged once its sensors and rules have handled it;
- an event that comes again (the acknowledgement was lost, a replica died
  holding it) is recognised by its id and not handled twice, as long as it
  is among the last :data:`SEEN` events this process handled;
- events older than ``settings.agent.events_max_age`` are never handed to a
  rule: a consumer is created at that age, a consumer left unused that long
  is dropped by the server, and an older event that still arrives is skipped
  (and counted as expired). They stay in the stream for the audit trail.

Only the leader among an agent's replicas consumes (see :mod:`.leading`).

A shadow agent (``settings.agent.shadow``) runs no timed sensor of its own:
its rules on those sensors follow the live agent's recorded observations
(``observation.<live agent>.<sensor>``) through consumers of the same kind,
so both decide on the very same observations, and a decision of each names
the same one as its cause.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from scanflow_agents._core.ports import AgentSpec
from scanflow_agents._kit.tasks import guarded
from scanflow_agents.messages import SCHEMA_VERSION, Envelope, Event, Observation, utcnow
from scanflow_agents.sensors import SensorSpec
from scanflow_agents.transports.base import StoredMessage, Subscription
from scanflow_agents.triggers import OnEvent

if TYPE_CHECKING:
    from scanflow_agents._core.reacting import Reactor
    from scanflow_agents.settings import AgentSettings
    from scanflow_agents.subjects import Subjects
    from scanflow_agents.transports.base import Transport

logger = logging.getLogger("scanflow_agents.consuming")

SEEN = 10_000  # event ids remembered per pattern to drop redeliveries


def durable_name(agent: str, pattern: str) -> str:
    """The durable consumer of one agent and topic pattern: readable, unique, server-safe.

    NATS consumer names may not hold ``.``, ``*``, ``>`` or whitespace, so the
    pattern is spelled with ``_`` for dots; a digest of the exact pair keeps
    ``a.b`` and ``a_b`` apart.
    """
    spelled = pattern.replace("*", "any").replace(">", "all")
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", f"{agent}-{spelled}")[:48]
    # The slug is cut to a bounded length; the digest of the exact pair keeps two
    # cut slugs apart.
    digest = hashlib.sha256(f"{agent}\0{pattern}".encode()).hexdigest()[:10]
    return f"{slug}-{digest}"


def topics(agent: AgentSpec) -> list[str]:
    """The topic patterns the agent's event sensors and rules listen to, without repeats."""
    found = [s.trigger.topic for s in agent.sensors.values() if isinstance(s.trigger, OnEvent)]
    found += [t for r in agent.rules.values() for t in r.topics]
    return list(dict.fromkeys(found))


def followed(agent: AgentSpec, live: str) -> dict[str, SensorSpec]:
    """The live agent's observation topics a shadow follows, with the sensor each stands for.

    Its timed and MLflow-reading sensors that a rule watches: an event sensor
    runs on the shadow itself, on the same events as the live one.
    """
    return {
        f"observation.{live}.{spec.id}": spec
        for spec in agent.sensors.values()
        if not isinstance(spec.trigger, OnEvent)
        and any(rule.watches_sensor(spec.id) for rule in agent.rules.values())
    }


@dataclass
class ConsumerState:
    """Counters of one pattern's consumer, for the description."""

    handled: int = 0
    duplicates: int = 0
    expired: int = 0
    malformed: int = 0

    def summary(self) -> dict[str, int]:
        return {
            "handled": self.handled,
            "duplicates": self.duplicates,
            "expired": self.expired,
            "malformed": self.malformed,
        }


class EventConsumers:
    """The durable consumers of one agent: started when it leads, stopped when not.

    Args:
        agent: the agent whose event sensors and rules listen.
        reactor: runs them on each event.
        transport: where the stream is.
        subjects: the namespace's subjects.
        settings: the agent settings (maximum age, acknowledgement wait).
        follow: for a shadow, the live agent whose recorded observations feed
            the rules on its timed sensors (see the module's docstring).
    """

    def __init__(
        self,
        agent: AgentSpec,
        reactor: Reactor,
        transport: Transport,
        subjects: Subjects,
        settings: AgentSettings,
        *,
        follow: str | None = None,
    ) -> None:
        self.agent = agent
        self.reactor = reactor
        self.transport = transport
        self.subjects = subjects
        self.settings = settings
        self.follow = follow
        self.followed = followed(agent, follow) if follow is not None else {}
        self.patterns = list(dict.fromkeys([*topics(agent), *self.followed]))
        self.states = {pattern: ConsumerState() for pattern in self.patterns}
        self._seen: dict[str, OrderedDict[str, None]] = {p: OrderedDict() for p in self.patterns}
        self._subscriptions: list[Subscription] = []
        # Leadership can be lost while start() still binds consumers; without the
        # lock, stop() would find a partial list, and start() would go on binding
        # consumers nobody stops.
        self._lock = asyncio.Lock()  # start and stop never interleave

    @property
    def running(self) -> bool:
        return bool(self._subscriptions)

    async def start(self) -> None:
        """Bind a durable consumer per pattern (created if new, resumed otherwise)."""
        async with self._lock:
            if self._subscriptions:
                return
            settings = self.settings
            for pattern in self.patterns:
                sub = await self.transport.consume(
                    self.subjects.event(pattern),
                    durable_name(self.agent.name, pattern),
                    self._handler(pattern),
                    max_age=settings.events_max_age,
                    ack_wait=settings.events_ack_wait,
                    # A consumer unused for the max age would only hand out
                    # expired events: let the server drop it.
                    inactive=settings.events_max_age,
                )
                self._subscriptions.append(sub)

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the events in hand and stop reading; unacknowledged ones go to the next reader.

        A handler still running after ``timeout`` seconds is cancelled. A rule's
        handler may wait on a call to another agent for minutes (a deployment),
        and an agent that is stopping or has lost its lease must not wait that
        long: the event stays unacknowledged and the next reader handles it
        again. The calls its decision makes carry the same ids the second time,
        so an actuator that already ran answers without running again.
        """
        async with self._lock:
            # Taken out before the first await: a start() waiting for the lock then
            # binds afresh rather than finding consumers that are going away.
            subs, self._subscriptions = self._subscriptions, []
            if not subs:
                return
            # A failure to unsubscribe is logged by the task kit; the stop goes on.
            name = f"unsubscribe:{self.agent.name}"
            ending = [guarded(sub.unsubscribe(), name=name, logger=logger) for sub in subs]
            _, pending = await asyncio.wait(ending, timeout=timeout)
            if pending:
                logger.warning(
                    "agent %r: an event's handler still running after %g s is cancelled; "
                    "the event will be delivered again",
                    self.agent.name,
                    timeout,
                )
                # Aborting cancels the handler in hand; its event was not acknowledged, so the
                # next reader gets it again.
                await asyncio.gather(*(sub.abort() for sub in subs), return_exceptions=True)
                await asyncio.wait(pending, timeout=timeout)

    def summary(self) -> dict[str, Any]:
        return {
            pattern: {"durable": durable_name(self.agent.name, pattern), **state.summary()}
            for pattern, state in self.states.items()
        }

    def _handler(self, pattern: str) -> Any:
        agent, reactor = self.agent, self.reactor
        sensors = [
            s
            for s in agent.sensors.values()
            if isinstance(s.trigger, OnEvent) and s.trigger.topic == pattern
        ]
        rules = [r for r in agent.rules.values() if pattern in r.topics]
        observed = self.followed.get(pattern)  # a shadow's view of a live sensor
        state, seen = self.states[pattern], self._seen[pattern]
        max_age = timedelta(seconds=self.settings.events_max_age)

        async def on_event(message: StoredMessage) -> None:
            # Events are handled in order, one at a time per topic pattern, so
            # rules that keep windows see them in the order they were stored.
            try:
                envelope = decode(message.data, "event")
            except ValueError as exc:
                # Acknowledged and skipped: delivered again it would fail again, and
                # hold back every event behind it.
                state.malformed += 1
                logger.warning(
                    "agent %r skipped a malformed event on %s: %s", agent.name, message.subject, exc
                )
                return
            if envelope.id in seen:
                state.duplicates += 1
                logger.info(
                    "agent %r: event %s on %s came again (delivery %d); already handled",
                    agent.name,
                    envelope.id,
                    message.subject,
                    message.deliveries,
                )
                return
            # Acting on a stale event (an old finding) could undo newer work: skipped and
            # acknowledged; it stays in the stream for the audit trail.
            if utcnow() - message.time > max_age:
                state.expired += 1
                return
            event = Event(
                id=envelope.id,
                topic=self.subjects.topic_of(message.subject),
                source=envelope.source,
                payload=envelope.payload,
                time=envelope.time,
                correlation_id=envelope.correlation_id,
            )
            if observed is not None:
                if not isinstance(envelope.payload, dict) or "value" not in envelope.payload:
                    state.malformed += 1
                    logger.warning(
                        "agent %r skipped an observation without a value on %s",
                        agent.name,
                        message.subject,
                    )
                    return
                # The live observation itself: its id and chain, so the shadow's
                # decision names the same cause as the live agent's.
                observation = Observation(
                    id=envelope.id,
                    agent=envelope.source,
                    sensor=observed.id,
                    value=envelope.payload["value"],
                    time=envelope.time,
                    correlation_id=envelope.correlation_id,
                )
                await reactor.react(observation, observed)
            for sensor in sensors:
                await reactor.run_sensor(sensor.id, event)
            for rule in rules:
                await reactor.run_rule(rule, event, event.correlation_id, event.id)
            state.handled += 1
            # Remembered only once handled: an event whose handling was cancelled half-way
            # must run when it comes back.
            seen[envelope.id] = None
            if len(seen) > SEEN:
                seen.popitem(last=False)

        return on_event


def decode(data: bytes, kind: str) -> Envelope:
    """An envelope of the expected kind and schema version, or :class:`ValueError` saying why."""
    try:
        envelope = Envelope.decode(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ValueError(f"not a valid envelope ({where}: {first['msg']})") from None
    # Refused rather than guessed at: another schema version may mean something
    # else by the same fields.
    if envelope.v != SCHEMA_VERSION:
        raise ValueError(
            f"schema version {envelope.v} is not supported (this agent speaks {SCHEMA_VERSION})"
        )
    if envelope.kind != kind:
        raise ValueError(f"expected a {kind!r} message, got {envelope.kind!r}")
    return envelope
