"""The lifecycle of one agent: subscribe, schedule, serve, and stop cleanly.

:class:`AgentRuntime` is the one async context manager an agent runs in.
Entering it subscribes to the agent's subjects, competes for the agent's
lease, starts its sensors and its heartbeat; the replica that holds the lease
runs the time sensors and reads the event stream for rules and event sensors
(see ``leading`` and ``consuming``). Leaving it (or :meth:`AgentRuntime.stop`,
which is idempotent) hands the lease over, stops the sensors, drains
subscriptions so accepted calls are answered, waits a bounded time for
in-flight handlers and cancels what remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from scanflow_agents import chains
from scanflow_agents._core.calling import call_envelope, remote_call, result_of
from scanflow_agents._core.consuming import EventConsumers
from scanflow_agents._core.controlling import Controller
from scanflow_agents._core.describing import describe, heartbeat
from scanflow_agents._core.dispatching import Dispatcher
from scanflow_agents._core.guards import CallStore
from scanflow_agents._core.instruments import NO_INSTRUMENTS, Instruments
from scanflow_agents._core.knowing import Knowledge
from scanflow_agents._core.leading import Leadership
from scanflow_agents._core.reacting import Reactor
from scanflow_agents._core.recording import Recorder, Sink, jsonable
from scanflow_agents._core.scheduling import Scheduler
from scanflow_agents._kit.tasks import Tasks
from scanflow_agents.errors import CallError
from scanflow_agents.messages import Envelope, Event, Heartbeat, Observation, Reply
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Message, Subscription, Transport

if TYPE_CHECKING:
    from scanflow_agents.agents import Agent

logger = logging.getLogger("scanflow_agents.running")

# What heartbeats and descriptions say in `state`; `stopped` is the last one sent.
AgentState = Literal["created", "starting", "running", "paused", "stopping", "stopped"]


class AgentRuntime:
    """One running agent on one transport."""

    def __init__(
        self,
        agent: Agent,
        transport: Transport,
        *,
        schedule: bool = True,
        sinks: Sequence[Sink] = (),
        instruments: Instruments = NO_INSTRUMENTS,
    ) -> None:
        self.agent = agent
        self.instruments = instruments
        self.transport = transport
        self.settings = agent.settings
        self.subjects = Subjects(self.settings.namespace)
        # Random per runtime: replicas (also several in one process) must differ,
        # since the lease names its holder by instance.
        self.instance = os.urandom(6).hex()
        self.state: AgentState = "created"
        self.ready = False
        self.paused_reason: str | None = None
        self.started_at = time.monotonic()
        self.tasks = Tasks(agent.name, on_broken=self._broken)
        # The parts, each given only what it uses (see scanflow_agents._core's docstring
        # for the path an observation takes through them).
        self.recorder = Recorder(
            agent.name,
            transport,
            self.subjects,
            list(sinks),
            limit=self.settings.agent.record_backlog,
            timeout=self.settings.agent.record_timeout,
        )
        self.knowledge = Knowledge(agent.name, self.settings, transport, self.recorder.sinks)
        self.dispatcher = Dispatcher(
            agent,
            self.settings.agent,
            recorder=self.recorder,
            store=CallStore(
                transport,
                self.subjects.calls_bucket,
                agent=agent.name,
                instance=self.instance,
                window=self.settings.agent.idempotency_window,
            ),
            spawn=lambda coro, name: self.tasks.spawn(coro, name=name),
            alive=self._alive,
            refusal=self.refusal,
            instruments=instruments,
        )
        self.reactor = Reactor(
            agent,
            handlers=self.settings.agent.handlers,
            record=self.recorder.record,
            call=self.call,
            refusal=self.refusal,
            cursors=self.knowledge,
            instruments=instruments,
        )
        # Replicas share calls; sensors and rules run on the one holding the lease.
        self.leadership = Leadership(
            transport,
            namespace=self.settings.namespace,
            agent=agent.name,
            instance=self.instance,
            ttl=self.settings.agent.lease_ttl,
            on_change=self._on_leadership,
        )
        self.consumers = EventConsumers(
            agent, self.reactor, transport, self.subjects, self.settings.agent
        )
        self.scheduler: Scheduler | None = (
            Scheduler(
                agent.name,
                agent.sensors.values(),
                self.run_sensor_guarded,
                leading=lambda: self.leadership.is_leader,
            )
            if schedule
            else None
        )
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
        """Start serving; on any failure, undo what was started and raise it.

        Raises:
            RuntimeError: the agent already runs in another runtime.
        """
        self.agent.attach_runtime(self)
        self.state = "starting"
        self.started_at = time.monotonic()
        # The order is from the inside out: each step may use the ones before it.
        try:
            # The recorder first: on_start may already emit events.
            self._recording = self.tasks.spawn(self.recorder.run(), name="recorder", endless=True)
            # The agent's own clients next, before anything can call into it.
            await self.agent.on_start()
            self._hooks_started = True
            # Before the first sensor run, which may read MLflow or record to it.
            await self.knowledge.start()
            # Calls and events can arrive from here on: everything they use is up.
            await self._subscribe()
            if self.scheduler is not None:
                self.scheduler.start()
            # Make sure the server knows our subscriptions before anyone is told we run.
            await self.transport.flush()
            # A lone replica leads from the start; others keep watching the lease.
            await self.leadership.start()
            self.tasks.spawn(self.leadership.run(), name="lease", endless=True)
        except BaseException:
            # Also on cancellation: stop() is bounded and leaves nothing running.
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
            await subscribe(subjects.act(name, "*"), self.dispatcher.on_call, queue=queue)
        )
        self._subscriptions.append(
            await subscribe(subjects.describe(name), self._on_describe, queue=queue)
        )
        self._subscriptions.append(await subscribe(subjects.discover, self._on_discover))
        self._subscriptions += await self.controller.subscribe()

    async def _on_leadership(self, leading: bool) -> None:
        # Only the leader reads the stream: the next one resumes from the
        # consumers' acknowledged position, so no event is missed or repeated.
        if leading and self.state not in ("stopping", "stopped"):
            await self.consumers.start()
        else:
            await self.consumers.stop(self.settings.agent.shutdown_timeout)

    async def stop(self) -> None:
        """Stop sensors, drain subscriptions, finish or cancel in-flight work. Idempotent."""
        if self.state in ("stopping", "stopped"):
            await self._stopped.wait()
            return
        self.state = "stopping"
        self.ready = False
        timeout = self.settings.agent.shutdown_timeout
        # The reverse of start(): first stop taking new work, then let the work
        # already taken finish (bounded), then store its records, and only then
        # tear down what that work used. Each wait is bounded by the timeout,
        # so a stuck handler delays shutdown but never blocks it.
        try:
            # No new sensor runs; runs under way are tracked tasks, waited for below.
            if self.scheduler is not None:
                self.scheduler.stop()
            # Finish the event in hand, then give the lease up so that another
            # replica takes over now rather than after the lease expires.
            await self.leadership.stop()
            await self.consumers.stop(timeout)
            # Unsubscribing drains: calls already delivered are still handled
            # (and answered), new ones go to another replica or get no responder.
            for sub in self._subscriptions:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.unsubscribe(), timeout)
            self._subscriptions.clear()
            # A stopping agent must not announce itself as alive.
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            if not await self.tasks.wait(timeout):
                logger.warning(
                    "agent %r: handlers still running after %g s; cancelling them",
                    self.agent.name,
                    timeout,
                )
            # on_stop runs while the recorder still runs: what it records or
            # emits is stored by the final flush below.
            if self._hooks_started:
                self._hooks_started = False
                try:
                    await asyncio.wait_for(self.agent.on_stop(), timeout)
                except Exception:
                    logger.exception("on_stop of agent %r failed", self.agent.name)
            # Records of the work that finished (and of on_stop) go out before the
            # recorder is cancelled with the remaining tasks (the handlers that overran).
            if self._recording is not None:
                await self.recorder.flush(timeout)
            await self.tasks.cancel()
            # MLflow last among the parts: the flush above may still have fed its sink.
            await self.knowledge.close()
        finally:
            self.state = "stopped"
            # A last heartbeat says so: watchers show `stopped` at once, and keep
            # `stale` (silence) for a replica that died without a word.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send_heartbeat(), min(timeout, 2.0))
            self.agent.detach_runtime(self)
            self._stopped.set()
            logger.info("agent %r stopped", self.agent.name)

    async def _alive(self, instance: str) -> bool:
        """Whether a replica of this agent (by instance id) answers discovery now."""
        if instance == self.instance:
            return True
        envelope = Envelope(kind="describe", source=self.agent.name)
        for data in await self.transport.gather(self.subjects.discover, envelope.encode(), 0.25):
            with contextlib.suppress(ValueError, ValidationError, CallError):
                answer = Envelope.decode(data)
                result = Reply.model_validate(answer.payload).result
                found = Heartbeat.read(result, agent=answer.source)
                if found.agent == self.agent.name and found.instance == instance:
                    return True
        return False

    async def _send_heartbeat(self) -> None:
        beat = heartbeat(self).model_dump(mode="json")
        envelope = Envelope(kind="heartbeat", source=self.agent.name, payload=beat)
        await self.transport.publish(self.subjects.heartbeat(self.agent.name), envelope.encode())

    def _broken(self, task_name: str) -> None:
        self.instruments.loop_broken(self.agent.name, task_name)
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
        """The scheduler's entry point: the run is a tracked task, so stop() waits for it."""
        task = self.tasks.spawn(self.run_sensor(sensor_id), name=f"sensor:{sensor_id}")
        # Shielded: if the scheduler's job is cancelled, the run itself goes on
        # until stop() has waited its deadline and cancels it as one of the tasks;
        # awaited, so APScheduler's max_instances=1 keeps a sensor from overlapping.
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if self.state not in ("stopping", "stopped"):
                raise
            # The scheduler's shutdown cancels the job that awaits the run; the
            # run is stop()'s to wait for. Ending the job normally keeps that
            # clean stop from being logged by APScheduler as a failed job.
            logger.debug("sensor %r: the scheduler stopped waiting for its run", sensor_id)

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        agent: str | None,
        actuator: str,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        dry_run: bool = False,
        call_id: str | None = None,
    ) -> Any:
        """Call an actuator in the current chain; raise the reply's :class:`CallError`."""
        target = agent or self.agent.name
        correlation, cause = chains.current()
        envelope = call_envelope(
            self.agent.name,
            target,
            actuator,
            params,
            correlation_id=correlation,
            causation_id=cause,
            call_id=call_id,
            dry_run=dry_run,
        )
        if target != self.agent.name:
            wait = timeout or self.settings.agent.call_timeout
            return await remote_call(self.transport, self.subjects, envelope, wait)
        # A call to oneself skips the wire but not validation, guards or recording.
        try:
            call = Envelope.model_validate(envelope)
            return result_of(await self.dispatcher.call_local(actuator, call))
        except CallError as exc:
            exc.agent, exc.actuator = target, actuator  # a nested call, as a remote one
            raise

    async def emit(self, topic: str, payload: Any) -> Envelope:
        """Queue an event on ``topic`` for the stream, in the current chain."""
        from scanflow_agents.triggers import validate_topic

        validate_topic(topic)
        if "*" in topic or ">" in topic:
            raise ValueError(f"cannot emit on a wildcard topic {topic!r}")
        correlation, cause = chains.current()
        envelope = Envelope(
            kind="event",
            source=self.agent.name,
            target=topic,
            correlation_id=correlation,
            causation_id=cause,
            payload=jsonable(payload),
        )
        await self.recorder.room()
        self.recorder.publish(self.subjects.event(topic), envelope)
        return envelope

    # -- wire handlers -------------------------------------------------------------------

    async def _on_describe(self, message: Message) -> None:
        answer = Reply(ok=True, result=describe(self).model_dump(mode="json"))
        reply = Envelope(
            kind="reply", source=self.agent.name, payload=answer.model_dump(exclude_none=True)
        )
        await message.respond(reply.encode())

    async def _on_discover(self, message: Message) -> None:
        answer = Reply(ok=True, result=heartbeat(self).model_dump(mode="json"))
        reply = Envelope(
            kind="reply", source=self.agent.name, payload=answer.model_dump(exclude_none=True)
        )
        await message.respond(reply.encode())

    async def _heartbeats(self) -> None:
        interval = self.settings.agent.heartbeat_interval
        while True:
            try:
                await self._send_heartbeat()
            except Exception as exc:  # a missed heartbeat must not end the loop
                logger.warning("agent %r could not send a heartbeat: %s", self.agent.name, exc)
            await asyncio.sleep(interval)
