"""The lifecycle of one agent: subscribe, schedule, serve, and stop cleanly.

:class:`AgentRuntime` is the one async context manager an agent runs in.
Entering it subscribes to the agent's subjects, starts its sensors and its
heartbeat; leaving it (or :meth:`AgentRuntime.stop`, which is idempotent)
stops the sensors, drains subscriptions so accepted calls are answered, waits
a bounded time for in-flight handlers and cancels what remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from scanflow_agents._core.calling import call_envelope, remote_call, result_of
from scanflow_agents._core.controlling import Controller
from scanflow_agents._core.describing import describe, heartbeat
from scanflow_agents._core.dispatching import Dispatcher, failure
from scanflow_agents._core.knowing import Knowledge
from scanflow_agents._core.reacting import Reactor
from scanflow_agents._core.recording import Recorder, Sink, jsonable
from scanflow_agents._core.scheduling import Scheduler
from scanflow_agents._core.tasks import Tasks
from scanflow_agents.errors import ErrorCode
from scanflow_agents.messages import SCHEMA_VERSION, Envelope, Event, Observation, Reply, new_id
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Message, Subscription, Transport
from scanflow_agents.triggers import OnEvent

if TYPE_CHECKING:
    from scanflow_agents.agents import Agent

logger = logging.getLogger("scanflow_agents.running")

# The chain the current handler belongs to: (correlation id, causing message id).
_chain: ContextVar[tuple[str, str | None] | None] = ContextVar("scanflow_chain", default=None)


class AgentRuntime:
    """One running agent on one transport."""

    def __init__(
        self,
        agent: Agent,
        transport: Transport,
        *,
        schedule: bool = True,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.agent = agent
        self.transport = transport
        self.settings = agent.settings
        self.subjects = Subjects(self.settings.namespace)
        self.instance = new_id()[:12]
        self.state = "created"
        self.ready = False
        self.paused_reason: str | None = None
        self.started_at = time.monotonic()
        self.tasks = Tasks(agent.name, on_broken=self._broken)
        self.recorder = Recorder(agent.name, transport, self.subjects, list(sinks))
        self.dispatcher = Dispatcher(self)
        self.reactor = Reactor(self)
        self.knowledge = Knowledge(self)
        self.scheduler: Scheduler | None = Scheduler(self) if schedule else None
        self.controller = Controller(self)  # operators' control messages, approvals
        self.approvals = self.controller.approvals
        self._subscriptions: list[Subscription] = []
        self._stopped = asyncio.Event()
        self._hooks_started = False
        self._heartbeat: asyncio.Task[Any] | None = None
        self._recording: asyncio.Task[Any] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> AgentRuntime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.agent._runtime is not None:
            raise RuntimeError(f"agent {self.agent.name!r} is already running")
        self.agent._runtime = self
        self.state = "starting"
        self.started_at = time.monotonic()
        try:
            self._recording = self.tasks.spawn(self.recorder.run(), name="recorder", endless=True)
            await self.agent.on_start()
            self._hooks_started = True
            await self.knowledge.start()
            await self._subscribe()
            if self.scheduler is not None:
                self.scheduler.start()
            # Make sure the server knows our subscriptions before anyone is told we run.
            await self.transport.flush()
        except BaseException:
            await self.stop()
            raise
        self.state = "running"
        self.ready = True
        # Heartbeats start once ready, so the first one already says so.
        self._heartbeat = self.tasks.spawn(self._heartbeats(), name="heartbeat", endless=True)
        logger.info(
            "agent %r started (instance %s, namespace %r)",
            self.agent.name,
            self.instance,
            self.settings.namespace,
        )

    async def _subscribe(self) -> None:
        name, subjects = self.agent.name, self.subjects
        queue = subjects.queue(name)
        subscribe = self.transport.subscribe
        self._subscriptions.append(
            await subscribe(subjects.act(name, "*"), self._on_call, queue=queue)
        )
        self._subscriptions.append(
            await subscribe(subjects.describe(name), self._on_describe, queue=queue)
        )
        self._subscriptions.append(await subscribe(subjects.discover, self._on_discover))
        self._subscriptions += await self.controller.subscribe()
        for topic in self._topics():
            handler = self._event_handler(topic)
            self._subscriptions.append(await subscribe(subjects.event(topic), handler, queue=queue))

    def _topics(self) -> list[str]:
        topics = [
            s.trigger.topic for s in self.agent.sensors.values() if isinstance(s.trigger, OnEvent)
        ]
        topics += [t for r in self.agent.rules.values() for t in r.topics]
        return list(dict.fromkeys(topics))

    async def stop(self) -> None:
        """Stop sensors, drain subscriptions, finish or cancel in-flight work. Idempotent."""
        if self.state in ("stopping", "stopped"):
            await self._stopped.wait()
            return
        self.state = "stopping"
        self.ready = False
        timeout = self.settings.agent.shutdown_timeout
        try:
            if self.scheduler is not None:
                self.scheduler.stop()
            for sub in self._subscriptions:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.unsubscribe(), timeout)
            self._subscriptions.clear()
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            if not await self.tasks.wait(timeout):
                logger.warning(
                    "agent %r: handlers still running after %g s; cancelling them",
                    self.agent.name,
                    timeout,
                )
            if self._recording is not None:
                await self.recorder.flush(timeout)
            await self.tasks.cancel()
            await self.knowledge.close()
            if self._hooks_started:
                self._hooks_started = False
                try:
                    await asyncio.wait_for(self.agent.on_stop(), timeout)
                except Exception:
                    logger.exception("on_stop of agent %r failed", self.agent.name)
        finally:
            self.state = "stopped"
            if self.agent._runtime is self:
                self.agent._runtime = None
            self._stopped.set()
            logger.info("agent %r stopped", self.agent.name)

    def _broken(self, task_name: str) -> None:
        if self.state == "running":
            self.ready = False
            logger.error("agent %r is not ready: its %s task died", self.agent.name, task_name)

    def pause(self, reason: str = "paused by an operator") -> None:
        """Stop running sensors and reject actuator calls until :meth:`resume`."""
        self.paused_reason = reason
        self.state = "paused"

    def resume(self) -> None:
        self.paused_reason = None
        if self.state == "paused":
            self.state = "running"

    def refusal(self) -> str | None:
        """Why the agent refuses work now (paused), or ``None``."""
        return (
            f"agent '{self.agent.name}' is paused: {self.paused_reason}"
            if self.paused_reason
            else None
        )

    # -- chains --------------------------------------------------------------------------

    @contextlib.contextmanager
    def chain(self, correlation_id: str, causation_id: str | None) -> Iterator[None]:
        token = _chain.set((correlation_id, causation_id))
        try:
            yield
        finally:
            _chain.reset(token)

    @staticmethod
    def current_chain() -> tuple[str, str | None]:
        return _chain.get() or (new_id(), None)

    # -- sensors -------------------------------------------------------------------------

    async def run_sensor(self, sensor_id: str, event: Event | None = None) -> Observation | None:
        """Run a sensor now (also what the scheduler calls); returns the observation, if any."""
        if sensor_id not in self.agent.sensors:
            known = ", ".join(sorted(self.agent.sensors)) or "none"
            raise KeyError(
                f"agent '{self.agent.name}' has no sensor '{sensor_id}' (sensors: {known})"
            )
        return await self.reactor.run_sensor(sensor_id, event)

    async def run_sensor_guarded(self, sensor_id: str) -> None:
        # The scheduler's entry point: a sensor run is a tracked task, so stop() waits for it.
        task = self.tasks.spawn(self.run_sensor(sensor_id), name=f"sensor:{sensor_id}")
        await asyncio.shield(task)

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        agent: str | None,
        actuator: str,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        dry_run: bool = False,
    ) -> Any:
        target = agent or self.agent.name
        correlation, cause = self.current_chain()
        envelope = call_envelope(
            self.agent.name,
            target,
            actuator,
            params,
            correlation_id=correlation,
            causation_id=cause,
            dry_run=dry_run,
        )
        if target != self.agent.name:
            wait = timeout or self.settings.agent.call_timeout
            return await remote_call(self.transport, self.subjects, envelope, wait)
        # A call to oneself skips the wire but not validation, guards or recording.
        replies: list[Reply] = []

        async def keep(reply: Reply) -> None:
            replies.append(reply)

        await self.dispatcher.dispatch(actuator, envelope, keep)
        return result_of(replies[0])

    async def emit(self, topic: str, payload: Any) -> Envelope:
        from scanflow_agents.triggers import validate_topic

        validate_topic(topic)
        if "*" in topic or ">" in topic:
            raise ValueError(f"cannot emit on a wildcard topic {topic!r}")
        correlation, cause = self.current_chain()
        envelope = Envelope(
            kind="event",
            source=self.agent.name,
            target=topic,
            correlation_id=correlation,
            causation_id=cause,
            payload=jsonable(payload),
        )
        self.recorder.publish(self.subjects.event(topic), envelope)
        return envelope

    # -- wire handlers -------------------------------------------------------------------

    async def _on_call(self, message: Message) -> None:
        # Calls run concurrently: each in its own tracked task, so one slow
        # actuator does not hold up the subscription.
        actuator = message.subject.rsplit(".", 1)[-1]
        self.tasks.spawn(self._serve_call(actuator, message), name=f"call:{actuator}")

    async def _serve_call(self, actuator: str, message: Message) -> None:
        async def respond(reply: Reply) -> None:
            await message.respond(
                Envelope(
                    kind="reply",
                    source=self.agent.name,
                    payload=reply.model_dump(exclude_none=True),
                    correlation_id=call.correlation_id,
                    causation_id=call.id,
                ).encode()
            )

        try:
            call = _decode(message.data, "call")
        except ValueError as exc:
            logger.warning(
                "agent %r got a malformed call on %s: %s", self.agent.name, message.subject, exc
            )
            reply = failure(
                ErrorCode.BAD_MESSAGE, f"agent '{self.agent.name}' cannot read the call: {exc}"
            )
            await message.respond(
                Envelope(
                    kind="reply",
                    source=self.agent.name,
                    payload=reply.model_dump(exclude_none=True),
                ).encode()
            )
            return
        await self.dispatcher.dispatch(actuator, call, respond)

    async def _on_describe(self, message: Message) -> None:
        reply = Envelope(
            kind="reply",
            source=self.agent.name,
            payload=Reply(ok=True, result=describe(self)).model_dump(exclude_none=True),
        )
        await message.respond(reply.encode())

    async def _on_discover(self, message: Message) -> None:
        reply = Envelope(
            kind="reply",
            source=self.agent.name,
            payload=Reply(ok=True, result=heartbeat(self)).model_dump(exclude_none=True),
        )
        await message.respond(reply.encode())

    def _event_handler(self, pattern: str) -> Any:
        sensors = [
            s
            for s in self.agent.sensors.values()
            if isinstance(s.trigger, OnEvent) and s.trigger.topic == pattern
        ]
        rules = [r for r in self.agent.rules.values() if pattern in r.topics]

        async def on_event(message: Message) -> None:
            # Events are handled in order, one at a time per topic pattern, so
            # rules that keep windows see them in the order they were sent.
            try:
                envelope = _decode(message.data, "event")
            except ValueError as exc:
                logger.warning(
                    "agent %r dropped a malformed event on %s: %s",
                    self.agent.name,
                    message.subject,
                    exc,
                )
                return
            event = Event(
                id=envelope.id,
                topic=self.subjects.topic_of(message.subject),
                source=envelope.source,
                payload=envelope.payload,
                time=envelope.time,
                correlation_id=envelope.correlation_id,
            )
            for sensor in sensors:
                await self.reactor.run_sensor(sensor.id, event)
            for rule in rules:
                await self.reactor.run_rule(rule, event, event.correlation_id, event.id)

        return on_event

    async def _heartbeats(self) -> None:
        interval = self.settings.agent.heartbeat_interval
        subject = self.subjects.heartbeat(self.agent.name)
        while True:
            try:
                envelope = Envelope(
                    kind="heartbeat", source=self.agent.name, payload=heartbeat(self)
                )
                await self.transport.publish(subject, envelope.encode())
            except Exception as exc:  # a missed heartbeat must not end the loop
                logger.warning("agent %r could not send a heartbeat: %s", self.agent.name, exc)
            await asyncio.sleep(interval)


def _decode(data: bytes, kind: str) -> Envelope:
    try:
        envelope = Envelope.decode(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ValueError(f"not a valid envelope ({where}: {first['msg']})") from None
    if envelope.v != SCHEMA_VERSION:
        raise ValueError(
            f"schema version {envelope.v} is not supported (this agent speaks {SCHEMA_VERSION})"
        )
    if envelope.kind != kind:
        raise ValueError(f"expected a {kind!r} message, got {envelope.kind!r}")
    return envelope
