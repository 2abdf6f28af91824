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
from scanflow_agents._core.announcing import Announcer
from scanflow_agents._core.approvals import Approvals
from scanflow_agents._core.budgets import ActionBudget
from scanflow_agents._core.calling import call_envelope, remote_call, result_of
from scanflow_agents._core.consuming import EventConsumers
from scanflow_agents._core.controlling import BROADCAST_OPS, NAMESPACE_OPS, Controller
from scanflow_agents._core.describing import describe, heartbeat
from scanflow_agents._core.dispatching import Dispatcher
from scanflow_agents._core.guards import CallStore
from scanflow_agents._core.instruments import NO_INSTRUMENTS, Instruments
from scanflow_agents._core.keeping import ApprovalKeeper
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
from scanflow_agents.transports.base import (
    KeyValue,
    Message,
    Subscription,
    Transport,
    TransportError,
)
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

    def unready(self) -> list[str]: ...


@dataclass(frozen=True)
class Health:
    """What probes and metrics read of a runtime, at one moment.

    Attributes:
        state: the lifecycle state (``paused`` while an operator paused it).
        ready: started, subscribed, none of its loops died, and the agent itself
            names nothing it waits for (``Agent.unready``).
        backlog: events recorded and not yet stored in the stream.
        unstored: why records cannot be stored now (the stream is unreachable
            or electing a leader); ``None`` while they are.
    """

    state: AgentState
    ready: bool
    backlog: int
    unstored: str | None = None


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
        self.control_state = ControlState(
            agent.name, dry_run=self.settings.agent.dry_run, shadow=self.settings.agent.shadow
        )
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
            budget=self._budget(transport),
            refusal=self.control_state.refusal,
            frozen=self.control_state.freeze_refusal,
            dry_run=self.control_state.dry_run,
            instruments=instruments,
        )
        self.reactor = Reactor(
            agent,
            handlers=self.settings.agent.handlers,
            record=self.recorder.record,
            call=self.call,
            refusal=self.control_state.sensor_refusal,
            shadow=self.settings.agent.shadow,
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
        # A shadow observes nothing itself: its rules follow the live agent's
        # recorded observations (see _core/consuming.py), so both decide on the
        # same ones.
        shadow = self.settings.agent.shadow
        followed = self.settings.agent.shadow_of or agent.name.removesuffix("-shadow")
        if shadow and followed == agent.name:
            raise ValueError(
                f"shadow agent {agent.name!r} would follow itself: name it "
                f"'<live agent>-shadow', or set settings.agent.shadow_of to the live agent"
            )
        self.consumers = EventConsumers(
            agent,
            self.reactor,
            transport,
            self.subjects,
            self.settings.agent,
            follow=followed if shadow else None,
        )
        self.scheduler: Scheduler | None = (
            Scheduler(
                agent.name,
                agent.sensors.values(),
                self.run_sensor_guarded,
                leading=lambda: self.leadership.is_leader,
            )
            if schedule and not shadow
            else None
        )
        self.approvals = Approvals(
            agent.name,
            instance=self.instance,
            record=self.recorder.record,
            spawn=lambda coro, name: self.tasks.spawn(coro, name=name),
            # Kept in the bucket, so a restarted or another replica takes them over.
            keeper=ApprovalKeeper(
                transport, self.subjects.approvals_bucket, agent=agent.name, instance=self.instance
            ),
            call=self.call,
            alive=self._alive,
            adopt_every=self.settings.agent.lease_ttl,
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
        self.announcer = Announcer(  # heartbeats, and the last state kept for later readers
            agent.name,
            transport,
            self.subjects,
            beat=lambda: heartbeat(self),
            interval=self.settings.agent.heartbeat_interval,
            keep=self.settings.agent.last_state_ttl,
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
        # Attached first: on_start and every handler reach the runtime through the
        # agent (self.call, self.approvals), and an agent already running elsewhere
        # is refused here, before anything has started.
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
            # A namespace frozen before this replica started: frozen before any call.
            self.controller.restore(await self._switch("freeze"))
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
        # Heartbeats start once ready, so the first one already says so. The first is
        # sent, and the last state kept, before start returns: a command asked right
        # after counts this replica among the running ones and waits for its answer.
        await self.announcer.try_announce(timeout=2.0)
        self._heartbeat = self.tasks.spawn(
            self.announcer.run(first=False), name="heartbeat", endless=True
        )
        logger.info(
            "agent %r started (instance %s, namespace %r)",
            self.agent.name,
            self.instance,
            self.settings.namespace,
        )

    async def _subscribe(self) -> None:
        name, subjects = self.agent.name, self.subjects
        # Calls and describe go to one replica of the queue group: a call runs once,
        # wherever. Discovery goes to every replica, since listings count them.
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
        for op in NAMESPACE_OPS:
            self._subscriptions.append(
                await subscribe(subjects.namespace_control(op), self.controller.on_message)
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
        # A second stop (a signal during shutdown, __aexit__ after stop()) waits
        # for the first instead of running the steps again on half-stopped parts.
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
            # What this replica holds is released in the bucket, for another
            # replica (or this agent restarted) to take over.
            await stop_task(self._expiring, timeout)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.approvals.release()
            # Finish the event in hand, then give the lease up so that another
            # replica takes over now rather than after the lease expires.
            await self.leadership.stop()
            await self.consumers.stop(timeout)
            # Unsubscribing drains: calls already delivered are still handled
            # (and answered), new ones go to another replica or get no responder.
            # One by one, each bounded and its failure ignored: a subscription that
            # cannot drain (the connection lost) must not keep the others from draining.
            for sub in self._subscriptions:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(timeout):
                        await sub.unsubscribe()
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
                    # Bounded like every step: an on_stop that hangs must not keep the process
                    # from exiting.
                    async with asyncio.timeout(timeout):
                        await self.agent.on_stop()
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
            # A last heartbeat says so, and is kept: watchers show `stopped` at
            # once, a command started later too, and `stale` (silence) is kept
            # for a replica that died without a word.
            try:
                # At most two seconds: over a dead connection this would otherwise
                # cost a whole shutdown timeout once more.
                async with asyncio.timeout(min(timeout, 2.0)):
                    await self.announcer.announce()
            except Exception as exc:
                logger.warning("agent %r could not say it stopped: %s", self.agent.name, exc)
            self.agent.detach_runtime(self)
            self._stopped.set()
            logger.info("agent %r stopped", self.agent.name)

    async def _switch(self, key: str) -> bytes | None:
        """A namespace switch as its bucket holds it (``None``: never set, or unreadable)."""
        try:
            return await self.transport.kv_get(self.subjects.switches_bucket, key)
        except TransportError as exc:
            logger.warning(
                "agent %r cannot read the namespace's switch %r (%s); a freeze set while it "
                "was down applies once an operator sends it again",
                self.agent.name,
                key,
                exc,
            )
            return None

    def _budget(self, transport: Transport) -> ActionBudget | None:
        """The namespace's action budget, when the settings set one."""
        agent = self.settings.agent
        if agent.action_budget is None:
            return None
        return ActionBudget(
            transport,
            self.subjects.budget_bucket,
            limit=agent.action_budget,
            period=agent.action_budget_period,
        )

    async def _alive(self, instance: str) -> bool:
        """Whether a replica of this agent (by instance id) answers discovery now."""
        if instance == self.instance:
            return True
        envelope = Envelope(kind="describe", source=self.agent.name)
        # A quarter second to answer: a replica taken for gone by mistake costs an
        # `in_doubt` answer to one caller, never a second run of the call.
        for data in await self.transport.gather(self.subjects.discover, envelope.encode(), 0.25):
            # An answer that cannot be read is skipped, not raised: the only question is
            # whether one of them comes from that replica.
            with contextlib.suppress(ValueError, ValidationError, CallError):
                answer = Envelope.decode(data)
                result = Reply.model_validate(answer.payload).result
                found = Heartbeat.read(result, agent=answer.source)
                if found.agent == self.agent.name and found.instance == instance:
                    return True
        return False

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
        recorder = self.recorder
        # Not ready while one of the agent's own checks fails (the planner's preflight).
        ready = self.ready and not self.agent.unready()
        return Health(self.state, ready, len(recorder.backlog), recorder.unstored)

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
        # Checked here, before the reactor: a wrong id typed by a person is answered
        # with the sensors there are, not a KeyError.
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
        """Call an actuator in the current chain; raise the reply's :class:`CallError`.

        A shadow agent's every call is a dry run: the callee validates, guards
        and records it, and acts on nothing.
        """
        target = agent or self.agent.name
        dry_run = dry_run or self.control_state.shadow
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
        """Queue an event on ``topic`` for the stream, in the current chain.

        A shadow agent's events go under ``shadow.<name>.<topic>``: a live rule
        watching ``topic`` must not act on what a policy under trial found.
        """
        validate_topic(topic)
        if self.control_state.shadow:
            topic = f"shadow.{self.agent.name}.{topic}"
        # NATS cannot publish on a wildcard subject: refused here, naming the topic,
        # rather than by the connection later.
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
        # An agent emitting faster than the stream stores is slowed down here, rather
        # than its events dropped.
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
