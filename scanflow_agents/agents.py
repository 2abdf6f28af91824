"""The :class:`Agent` base class: it collects the specs its methods declare.

Decorators only record specs on functions; ``Agent.__init_subclass__`` walks
the class's MRO and gathers them, so there is no global registry filled at
import time, and a subclass overrides a parent's handler by redefining the
method (with or without a decorator) or by reusing its id.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from scanflow_agents import chains
from scanflow_agents._core.approvals import Approvals
from scanflow_agents._core.instruments import NO_INSTRUMENTS, Instruments
from scanflow_agents._core.running import AgentRuntime
from scanflow_agents.actuators import ActuatorSpec
from scanflow_agents.errors import DefinitionError
from scanflow_agents.handlers import HandlerFn, HandlerSpec, spec_of
from scanflow_agents.rules import RuleSpec
from scanflow_agents.sensors import SensorSpec
from scanflow_agents.settings import Settings

if TYPE_CHECKING:
    # For types only: the MLflow client's module loads MLflow, which an agent
    # that never reads MLflow does not need.
    from scanflow_agents.knowledge import KnowledgeClient
    from scanflow_agents.transports.base import KeyValue, Transport

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def default_name(class_name: str) -> str:
    """``DriftWatch`` → ``drift-watch``: usable as a NATS token and a Kubernetes name."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", class_name).lower().replace("_", "-")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"agent name {name!r} must be 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


class Agent:
    """The base class of every agent.

    Subclass it and declare methods with :func:`~scanflow_agents.sensor`,
    :func:`~scanflow_agents.rule` and :func:`~scanflow_agents.actuator`::

        class DriftWatch(Agent):
            @sensor(every=30)
            async def accuracy(self) -> float: ...

    Attributes:
        name: the agent's name on the wire (default: the class name in kebab case).
        settings: the settings tree the agent runs with.
    """

    # Class attributes that an instance may override (a name, or specs given as values).
    name: str = "agent"
    sensors: Mapping[str, SensorSpec] = MappingProxyType({})
    rules: Mapping[str, RuleSpec] = MappingProxyType({})
    actuators: Mapping[str, ActuatorSpec] = MappingProxyType({})

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = check_name(name or cls.__dict__.get("name") or default_name(cls.__name__))
        specs = _collect(cls)
        cls.sensors, cls.rules, cls.actuators = _split(specs, owner=cls.name)

    def __init__(
        self,
        *,
        name: str | None = None,
        settings: Settings | None = None,
        specs: Iterable[HandlerSpec | HandlerFn] = (),
    ) -> None:
        """Create an agent instance.

        Args:
            name: overrides the class's name (e.g. two differently named instances of one class).
            settings: the settings tree; defaults to built-in defaults (the CLI injects real ones).
            specs: more handlers given as values (specs, or decorated functions); they
                override the class's handlers of the same kind and id.
        """
        self.name = check_name(name) if name else type(self).name
        self.settings = settings if settings is not None else Settings.defaults()
        given = [_as_spec(item) for item in specs]
        if given:
            merged = [*self.sensors.values(), *self.rules.values(), *self.actuators.values()]
            merged = [s for s in merged if not any(_same(s, g) for g in given)] + given
            self.sensors, self.rules, self.actuators = _split(merged, owner=self.name)
        self._runtime: AgentRuntime | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once before the agent subscribes: open clients, platforms, state.

        An exception here aborts the start with that error; nothing is left running.
        """

    async def on_stop(self) -> None:
        """Called once after the agent stopped serving (in-flight work is done)."""

    def running(
        self,
        transport: Transport,
        *,
        schedule: bool = True,
        instruments: Instruments | None = None,
    ) -> AgentRuntime:
        """The agent's lifecycle as an async context manager.

        ``async with agent.running(transport):`` subscribes, starts the sensors and
        serves; leaving it stops the sensors, drains in-flight work and
        unsubscribes, bounded by ``settings.agent.shutdown_timeout``. The transport
        is not closed: several agents may share one connection.

        Args:
            transport: the connection to talk over.
            schedule: start time-triggered sensors (tests may drive them by hand instead).
            instruments: what measures the agent's work (the pod entrypoint's metrics);
                default: nothing.
        """
        return AgentRuntime(
            self, transport, schedule=schedule, instruments=instruments or NO_INSTRUMENTS
        )

    def attach_runtime(self, runtime: AgentRuntime) -> None:
        """Bind the agent to the runtime that runs it (the runtime calls this as it starts).

        Raises:
            RuntimeError: the agent already runs in another runtime; one agent
                instance runs once (make a second instance for a replica).
        """
        if self._runtime is not None and self._runtime is not runtime:
            raise RuntimeError(f"agent {self.name!r} is already running")
        self._runtime = runtime

    def detach_runtime(self, runtime: AgentRuntime) -> None:
        """Unbind the agent from ``runtime`` as it stops; a no-op if it runs elsewhere."""
        if self._runtime is runtime:
            self._runtime = None

    @property
    def message_id(self) -> str | None:
        """The id of the message being handled (in an actuator: the call id, idempotency key).

        ``None`` outside a handler, or in a sensor run that no event caused.
        """
        return chains.current().causation_id

    @property
    def knowledge(self) -> KnowledgeClient:
        """The MLflow client of ``settings.mlflow`` (created on first use, closed at stop)."""
        return self.runtime.knowledge_client()

    @property
    def approvals(self) -> Approvals:
        """Decisions waiting for a person: ``hold`` one, and ``scanflow approvals`` lists it."""
        return self.runtime.approvals

    @property
    def is_running(self) -> bool:
        """Whether the agent runs in a runtime now (from start until it has stopped)."""
        return self._runtime is not None

    @property
    def runtime(self) -> AgentRuntime:
        """The running runtime; an error if the agent is not running."""
        if self._runtime is None:
            raise RuntimeError(
                f"agent {self.name!r} is not running: use 'async with agent.running(...)'"
            )
        return self._runtime

    def unready(self) -> list[str]:
        """What this agent waits for before it can serve, beyond its runtime (empty: nothing).

        An agent that needs something outside itself to act (the planner: its
        namespaces and permissions on a cluster) overrides this; while it names
        anything, probes and metrics count the agent not ready and ``/readyz``
        says why, in these words.
        """
        return []

    # -- talking to others ---------------------------------------------------------------

    async def call(
        self,
        agent: str | None,
        actuator: str,
        arguments: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        dry_run: bool = False,
        **params: Any,
    ) -> Any:
        """Call an actuator of another agent (or of this one: ``agent=None``); return its result.

        Parameters go as keywords, or as a mapping after the actuator's name when
        one is named like this method's own keywords (``{"timeout": 30}``).

        Raises:
            CallError: a subclass naming what failed: ``BadInput`` (with ``field``),
                ``NotFound``, ``Rejected``, ``HandlerFailed``, ``CallTimeout`` or
                ``Unavailable`` when no such agent runs.
        """
        merged = {**(arguments or {}), **params}
        return await self.runtime.call(agent, actuator, merged, timeout=timeout, dry_run=dry_run)

    async def emit(self, topic: str, payload: Any) -> None:
        """Publish an event on ``topic`` (stored in the stream), in the current chain."""
        await self.runtime.emit(topic, payload)

    # -- state that outlives the process ---------------------------------------------------

    async def key_value(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        """A key-value bucket on the agent's connection, created on first use.

        For state that must outlive the process and be shared by the agent's
        replicas: JetStream key-value on NATS (the in-memory bus keeps its own
        in tests). Its methods: ``get`` (an entry with ``value`` and
        ``revision``, or ``None``), ``put``, ``create`` (only if the key holds
        nothing), ``update`` (only at the revision read), ``delete`` and
        ``keys``; a lost race raises ``KvConflict``. ``ttl``: seconds an entry
        lives after its last write (``None``: for ever). Bucket names are
        letters, digits, ``-`` and ``_``, and a NATS account shares them: put
        the namespace in the name (``f"{self.name}-{self.settings.namespace}"``).
        """
        return await self.runtime.key_value(bucket, ttl=ttl)


def _as_spec(item: HandlerSpec | HandlerFn) -> HandlerSpec:
    spec = item if isinstance(item, HandlerSpec) else spec_of(item)
    if spec is None:
        raise DefinitionError(f"{item!r} is neither a handler spec nor a decorated function")
    return spec


def _same(a: HandlerSpec, b: HandlerSpec) -> bool:
    return a.kind == b.kind and a.id == b.id


def _collect(cls: type) -> list[HandlerSpec]:
    """The handlers of a class: the final value of each attribute along the MRO."""
    final: dict[str, tuple[type, HandlerSpec | None]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            final[attr] = (klass, spec_of(value))
    chosen: dict[tuple[str, str], tuple[type, HandlerSpec]] = {}
    for attr, (klass, spec) in final.items():
        if spec is None:
            continue
        key = (spec.kind, spec.id)
        if key in chosen:
            other_class, other = chosen[key]
            if other_class is klass:
                raise DefinitionError(
                    f"{klass.__qualname__} declares two {spec.kind}s with id '{spec.id}' "
                    f"({other.fn.__name__} and {attr})"
                )
            if not issubclass(klass, other_class):
                continue  # keep the one from the more derived class
        chosen[key] = (klass, spec)
    return [spec for _, spec in chosen.values()]


def _split(
    specs: Iterable[HandlerSpec], *, owner: str
) -> tuple[Mapping[str, SensorSpec], Mapping[str, RuleSpec], Mapping[str, ActuatorSpec]]:
    sensors: dict[str, SensorSpec] = {}
    rules: dict[str, RuleSpec] = {}
    actuators: dict[str, ActuatorSpec] = {}
    for spec in specs:
        if isinstance(spec, SensorSpec):
            _check_arity(spec, 2 if spec.on_event or spec.reads else 1, owner)
            sensors[spec.id] = spec
        elif isinstance(spec, RuleSpec):
            _check_arity(spec, 2, owner)
            rules[spec.id] = spec
        elif isinstance(spec, ActuatorSpec):
            actuators[spec.id] = spec
    for rule_spec in rules.values():
        for sensor_id in rule_spec.sensors:
            if sensor_id not in sensors:
                raise DefinitionError(
                    f"{rule_spec} of agent '{owner}' watches unknown sensor '{sensor_id}' "
                    f"(sensors: {', '.join(sorted(sensors)) or 'none'})"
                )
    return MappingProxyType(sensors), MappingProxyType(rules), MappingProxyType(actuators)


def _check_arity(spec: HandlerSpec, wanted: int, owner: str) -> None:
    params = list(inspect.signature(spec.fn).parameters.values())
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) > wanted or len(params) < wanted:
        needed = "(self)" if wanted == 1 else "(self, message)"
        raise DefinitionError(
            f"{spec} of agent '{owner}' must take {needed}; {spec.fn.__qualname__} takes "
            f"({', '.join(p.name for p in params)})"
        )
