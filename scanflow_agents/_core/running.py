"""The lifecycle of one agent: subscribe, schedule, serve, and stop cleanly.

:class:`AgentRuntime` is the one async context manager an agent runs in.
Entering it subscribes to the agent's subjects, competes for the agent's
lease, starts its sensors and its heartbeat; the replica that holds the lease
runs the time sensors and reads the event stream for rules and event sensors
(see ``leading`` and ``consuming``). Leaving it (or :meth:`AgentRuntime.stop`,
which is idempotent) hands the lease over, stops the sensors, drains
subscriptions so accepted calls are answered, waits a bounded time for
in-flight handlers and cancels what remains.

The runtime owns the lifecycle and wires the parts; the state each part
keeps is its own. The operator's switches (pause, sensor pauses, dry-run)
are one :class:`~scanflow_agents._core.switches.ControlState`, changed only
by the :class:`~scanflow_agents._core.controlling.Controller` and read by the
Reactor and the Dispatcher through ports. Other modules use the runtime
through its public methods only (``tests/test_architecture.py`` lists them):
they do not reach through it to its parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ValidationError

from scanflow_agents import chains
from scanflow_agents._core.approvals import Approvals
from scanflow_agents._core.calling import call_envelope, remote_call, result_of
from scanflow_agents._core.consuming import EventConsumers
from scanflow_agents._core.controlling import BROADCAST_OPS, Controller
from scanflow_agents._core.describing import describe, heartbeat
from scanflow_agents._core.dispatching import Dispatcher
from scanflow_agents._core.guards import CallStore
from scanflow_agents._core.instruments import NO_INSTRUMENTS, Instruments
from scanflow_agents._core.knowing import Knowledge
from scanflow_agents._core.leading import Leadership
from scanflow_agents._core.ports import AgentSpec
from scanflow_agents._core.reacting import Reactor
from scanflow_agents._core.recording import Recorder, Sink, jsonable
from scanflow_agents._core.scheduling import Scheduler
from scanflow_agents._core.switches import ControlSnapshot, ControlState
from scanflow_agents._kit.tasks import Tasks
from scanflow_agents._kit.tasks import stop as stop_task
from scanflow_agents.errors import CallError
from scanflow_agents.messages import Envelope, Event, Heartbeat, Observation, Reply
from scanflow_agents.sensors import sensor_of
from scanflow_agents.settings import Settings
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import KeyValue, Message, Subscription, Transport
from scanflow_agents.triggers import validate_topic

if TYPE_CHECKING:
    # For types only: the MLflow client's module loads MLflow, which the core
    # does not import until an agent uses it.
    from scanflow_agents.knowledge import KnowledgeClient

logger = logging.getLogger("scanflow_agents.running")

# What heartbeats and descriptions say in `state`; `stopped` is the last one sent.
AgentState = Literal["created", "starting", "running", "paused", "stopping", "stopped"]
Phase = Literal["created", "starting", "running", "stopping", "stopped"]


class Hosted(AgentSpec, Protocol):
    """What the runtime uses of the agent it runs, beyond its specs: settings and hooks.

    ``scanflow_agents.Agent`` is one; the runtime binds itself to the agent at
    start (so that ``self.call`` and ``self.approvals`` work in handlers) and
    unbinds at stop.
    """

    @property
    def settings(self) -> Settings: ...

    async def on_start(self) -> None: ...

    async def on_stop(self) -> None: ...

    def attach_runtime(self, runtime: AgentRuntime) -> None: ...

    def detach_runtime(self, runtime: AgentRuntime) -> None: ...


@dataclass(frozen=True)
class Health:
    """What probes and metrics read of a runtime, at one moment.

    Attributes:
        state: the lifecycle state (``paused`` while an operator paused it).
        ready: started, subscribed, and none of its loops died.
        backlog: events recorded and not yet stored in the stream.
    """

    state: AgentState
    ready: bool
    backlog: int


class AgentRuntime:
    """One running agent on one transport."""

    def __init__(
        self,
        agent: Hosted,
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
        self._phase: Phase = "created"
        self.ready = False
        self.started_at = time.monotonic()
        self.tasks = Tasks(agent.name, on_broken=self._broken)
        # The operator's switches: changed by the controller only, read by the parts.
        self.control_state = ControlState(agent.name, dry_run=self.settings.agent.dry_run)
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
            refusal=self.control_state.refusal,
            dry_run=self.control_state.dry_run,
            instruments=instruments,
        )
        self.reactor = Reactor(
            agent,
            handlers=self.settings.agent.handlers,
            record=self.recorder.record,
            call=self.call,
            refusal=self.control_state.sensor_refusal,
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
        self.approvals = Approvals(
            agent.name,
            instance=self.instance,
            record=self.recorder.record,
            spawn=lambda coro, name: self.tasks.spawn(coro, name=name),
        )
        self.controller = Controller(  # operators' control messages
            agent,
            instance=self.instance,
            settings=self.settings.agent,
            controls=self.control_state,
            approvals=self.approvals,
            run_sensor=self.run_sensor,
            record=self.recorder.record,
            spawn=lambda coro, name: self.tasks.spawn(coro, name=name),
        )
        self._subscriptions: list[Subscription] = []
        self._stopped = asyncio.Event()
        self._hooks_started = False
        self._heartbeat: asyncio.Task[Any] | None = None
        self._recording: asyncio.Task[Any] | None = None
        self._expiring: asyncio.Task[Any] | None = None

    @property
    def state(self) -> AgentState:
        """The lifecycle state; ``paused`` while running and paused by an operator."""
        if self._phase == "running" and self.control_state.paused:
            return "paused"
        return self._phase

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
        self._phase = "starting"
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
            # Before anything can hold an approval (handlers run once subscribed):
            # the timer applies the timeout policies from the first hold on.
            self._expiring = self.tasks.spawn(self.approvals.run(), name="approvals", endless=True)
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
        self._phase = "running"
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
        # run-sensor goes to one replica (queue group); the other ops to every one.
        self._subscriptions.append(
            await subscribe(
                subjects.control(name, "run-sensor"), self.controller.on_message, queue=queue
            )
        )
        for op in BROADCAST_OPS:
            self._subscriptions.append(
                await subscribe(subjects.control(name, op), self.controller.on_message)
            )

    async def _on_leadership(self, leading: bool) -> None:
        # Only the leader reads the stream: the next one resumes from the
        # consumers' acknowledged position, so no event is missed or repeated.
        if leading and self._phase not in ("stopping", "stopped"):
            await self.consumers.start()
        else:
            await self.consumers.stop(self.settings.agent.shutdown_timeout)

    async def stop(self) -> None:
        """Stop sensors, drain subscriptions, finish or cancel in-flight work. Idempotent."""
        if self._phase in ("stopping", "stopped"):
            await self._stopped.wait()
            return
        self._phase = "stopping"
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
            # No approval expires from here on: a plan its timeout approved now
            # would start after the wait below began and be cancelled half-way.
            # It stays held, and goes with the process as every approval does
            # (they are kept in memory).
            await stop_task(self._expiring, timeout)
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
            self._phase = "stopped"
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
        # Also when paused: a dead loop does not come back on resume.
        if self._phase == "running":
            self.ready = False
            logger.error("agent %r is not ready: its %s task died", self.agent.name, task_name)

    # -- what others read ----------------------------------------------------------------

    def controls(self) -> ControlSnapshot:
        """The operator's switches now (pause, sensor pauses, dry-run), as a frozen copy."""
        return self.control_state.snapshot()

    def health(self) -> Health:
        """State, readiness and record backlog now (what probes and metrics read)."""
        return Health(self.state, self.ready, len(self.recorder.backlog))

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until the work in flight is done and its records are stored (bounded).

        Calls, control messages and sensor runs under way finish first, then
        the records they made are flushed to the stream: a test (or a script)
        reads them back afterwards. The agent keeps running.
        """
        # A round trip to the server: what it had for this agent by now has arrived.
        await self.transport.flush()
        await self.tasks.wait(timeout)
        await self.recorder.flush(timeout)

    def knowledge_client(self) -> KnowledgeClient:
        """The MLflow client of ``settings.mlflow`` (created on first use, closed at stop)."""
        return self.knowledge.client()

    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        """A key-value bucket on the agent's connection (see ``Agent.key_value``)."""
        return await self.transport.key_value(bucket, ttl=ttl)

    # -- sensors -------------------------------------------------------------------------

    async def run_sensor(self, sensor_id: str, event: Event | None = None) -> Observation | None:
        """Run a sensor now (also what the scheduler calls); returns the observation, if any."""
        sensor_of(self.agent.name, self.agent.sensors, sensor_id)
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
            if self._phase not in ("stopping", "stopped"):
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
