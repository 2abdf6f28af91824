"""The small interfaces the core's parts are given instead of the whole runtime.

Each part (the Reactor, the Dispatcher, the Controller, the Scheduler,
Knowledge) is built with the few functions it uses, so it can be built and
tested alone: a test passes a list's ``append`` where the runtime passes the
recorder.

The core knows an agent only as an :class:`AgentSpec`: its name and the specs
its class collected. The ``Agent`` class (``scanflow_agents.agents``) sits on
top of the core and satisfies it; nothing in the core imports it back, so the
two form no import cycle (``tests/test_architecture.py`` checks that).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scanflow_agents.actuators import ActuatorSpec
    from scanflow_agents.knowledge import Poll
    from scanflow_agents.messages import Envelope, Observation
    from scanflow_agents.rules import RuleSpec
    from scanflow_agents.sensors import SensorSpec


class AgentSpec(Protocol):
    """What the core reads of an agent: its name and its handlers' specs, by id.

    The handlers are called with the agent object itself as their ``self``;
    the core reads nothing else of it.
    """

    @property
    def name(self) -> str: ...

    @property
    def sensors(self) -> Mapping[str, SensorSpec]: ...

    @property
    def rules(self) -> Mapping[str, RuleSpec]: ...

    @property
    def actuators(self) -> Mapping[str, ActuatorSpec]: ...


class Record(Protocol):
    """Record one event of ``kind`` (observation, decision, action) by handler ``name``.

    Returns the envelope as recorded: its id is the event's id in the stream
    (``event_id`` if given: the stream keeps one event per id).
    """

    async def __call__(
        self,
        kind: str,
        name: str,
        payload: dict[str, Any],
        *,
        correlation_id: str,
        causation_id: str | None = None,
        event_id: str | None = None,
    ) -> Envelope: ...


class Call(Protocol):
    """Call an actuator (``agent=None``: this agent's own) and return its result.

    Raises the matching :class:`~scanflow_agents.CallError` when the call fails.
    ``call_id`` fixes the call's id, the receiver's idempotency key.
    """

    async def __call__(
        self,
        agent: str | None,
        actuator: str,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> Any: ...


class Cursors(Protocol):
    """Where a sensor that reads MLflow gets what is new, and keeps its position."""

    async def poll(self, spec: SensorSpec) -> Poll: ...

    async def commit(self, spec: SensorSpec) -> None: ...


Refusal = Callable[[], "str | None"]
"""Why the agent refuses work now (e.g. paused), or ``None`` when it accepts it."""

SensorRefusal = Callable[[str], "str | None"]
"""Why the agent does not run the sensor with this id now (it or the agent is paused)."""

DryRun = Callable[[], bool]
"""Whether the agent's actuators only validate, guard and record, without acting."""

Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]
"""Starts a task tracked by its owner (stop() waits for it): ``spawn(coroutine, name)``."""

RunSensor = Callable[[str], Awaitable["Observation | None"]]
"""Runs a sensor now, by id, with its rules; the observation, if any."""


def never_refuse(*_: object) -> str | None:
    """The :data:`Refusal` (or :data:`SensorRefusal`) of an agent that always works."""
    return None


def never_dry() -> bool:
    """The :data:`DryRun` of an agent that acts."""
    return False
