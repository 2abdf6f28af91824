"""What an agent says about itself: its heartbeats and its description.

Both are built as the models of :mod:`scanflow_agents.messages` (the wire
contract readers validate against) from a :class:`Described`: the parts of
a running agent they read, and nothing else. The runtime is one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from scanflow_agents.messages import (
    ActuatorStatus,
    Description,
    Heartbeat,
    RuleStatus,
    SensorStatus,
    utcnow,
)
from scanflow_agents.redaction import mask

if TYPE_CHECKING:
    from scanflow_agents._core.consuming import EventConsumers
    from scanflow_agents._core.controlling import Controller
    from scanflow_agents._core.dispatching import Dispatcher
    from scanflow_agents._core.leading import Leadership
    from scanflow_agents._core.ports import AgentSpec
    from scanflow_agents._core.reacting import Reactor
    from scanflow_agents._core.recording import Recorder
    from scanflow_agents._core.scheduling import Scheduler
    from scanflow_agents.settings import Settings


class Described(Protocol):
    """The parts of a running agent that its heartbeat and description are read from."""

    @property
    def agent(self) -> AgentSpec: ...  # its specs (and its class, named in the heartbeat)

    settings: Settings
    instance: str
    ready: bool
    started_at: float
    recorder: Recorder
    leadership: Leadership
    controller: Controller
    scheduler: Scheduler | None
    reactor: Reactor
    dispatcher: Dispatcher
    consumers: EventConsumers

    @property
    def state(self) -> str: ...  # read only: the runtime's is a narrower Literal


def heartbeat(runtime: Described) -> Heartbeat:
    """The short liveness record sent every ``heartbeat_interval`` seconds."""
    agent = runtime.agent
    return Heartbeat(
        agent=agent.name,
        agent_class=f"{type(agent).__module__}.{type(agent).__qualname__}",
        namespace=runtime.settings.namespace,
        instance=runtime.instance,
        state=runtime.state,
        ready=runtime.ready,
        time=utcnow(),
        uptime=round(time.monotonic() - runtime.started_at, 3),
        events=dict(runtime.recorder.counts),
        backlog=len(runtime.recorder.backlog),
        unstored=runtime.recorder.unstored,
        # Whether this replica runs the sensors and rules (holds the lease), the
        # leader's instance, and the lease's fencing token while leading.
        **runtime.leadership.summary(),
        **runtime.controller.summary(),  # dry-run, paused sensors, approvals waiting
        shadow_of=runtime.consumers.follow,
    )


def describe(runtime: Described) -> Description:
    """The full description: sensors (schedule, last result), rules, actuators (schemas)."""
    agent, reactor, scheduler = runtime.agent, runtime.reactor, runtime.scheduler
    sensors = [
        SensorStatus(
            id=sid,
            description=spec.description,
            trigger=str(spec.trigger),
            next_run=scheduler.next_run(sid) if scheduler else None,
            **reactor.sensor_states[sid].summary(),
        )
        for sid, spec in agent.sensors.items()
    ]
    rules = [
        RuleStatus(
            id=rid,
            description=spec.description,
            sensors=spec.sensors,
            topics=spec.topics,
            runs=reactor.rule_states[rid].runs,
            decisions=reactor.rule_states[rid].decisions,
            failures=reactor.rule_states[rid].failures,
            last_decision=reactor.rule_states[rid].last_decision,
        )
        for rid, spec in agent.rules.items()
    ]
    actuators = [
        ActuatorStatus(
            id=aid,
            description=spec.description,
            params=spec.schema(),
            cooldown=spec.cooldown,
            # The timeout that applies, not only the declared one: callers such as the
            # CLI wait that long (and a margin) for the reply.
            timeout=spec.options.timeout or runtime.settings.agent.handlers.timeout,
            rate=str(spec.rate) if spec.rate else None,
            idempotent=spec.idempotent,
            read_only=spec.read_only,
            executions=runtime.dispatcher.executions.get(aid, 0),
        )
        for aid, spec in agent.actuators.items()
    ]
    described = Description(
        # A description is a heartbeat and more: one source for the fields both carry,
        # so the two never disagree.
        **dict(heartbeat(runtime)),
        sensors=tuple(sensors),
        rules=tuple(rules),
        actuators=tuple(actuators),
        # Per topic pattern: the durable consumer and what it handled, skipped as
        # duplicates, as too old, or as malformed.
        consumers=runtime.consumers.summary(),
    )
    # Last results and errors are the handlers' own words: masked before anyone reads them.
    shown: Description = mask(described)
    return shown
