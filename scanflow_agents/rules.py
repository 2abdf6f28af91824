"""Rules decide: they receive observations or events and return a decision, or ``None``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

from scanflow_agents.errors import DefinitionError
from scanflow_agents.handlers import ErrorMode, HandlerFn, HandlerOptions, HandlerSpec, attach
from scanflow_agents.triggers import validate_topic


@dataclass(frozen=True, kw_only=True)
class RuleSpec(HandlerSpec):
    """A rule and what it watches.

    Attributes:
        sensors: ids of the agent's own sensors whose observations it receives.
        topics: event topic patterns (other agents' events) it receives.

    A rule that names neither watches every sensor of its agent. It is called as
    ``fn(agent, observation)`` or ``fn(agent, event)`` and may return a
    :class:`~scanflow_agents.Decision`.
    """

    kind = "rule"

    sensors: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        for topic in self.topics:
            validate_topic(topic)

    def watches_sensor(self, sensor_id: str) -> bool:
        return sensor_id in self.sensors or (not self.sensors and not self.topics)

    def __str__(self) -> str:
        watched = [*self.sensors, *(f"on '{t}'" for t in self.topics)] or ["all sensors"]
        return f"rule '{self.id}' ({', '.join(watched)})"


@overload
def rule(fn: HandlerFn, /) -> HandlerFn: ...


@overload
def rule(
    *sensors: str,
    on: str | Sequence[str] = (),
    id: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    errors: ErrorMode = "temporary",
) -> Callable[[HandlerFn], HandlerFn]: ...


def rule(
    *sensors: str | HandlerFn,
    on: str | Sequence[str] = (),
    id: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    errors: ErrorMode = "temporary",
) -> HandlerFn | Callable[[HandlerFn], HandlerFn]:
    """Declare a method as a rule: ``@rule`` (all sensors), ``@rule("a", "b")``, ``@rule(on=...)``.

    Args:
        *sensors: ids of this agent's sensors to watch (none and no ``on``: all of them).
        on: event topic pattern(s) to watch, e.g. ``finding.checker.*``.
        id: the rule's name; defaults to the method name.
        timeout: seconds one run may take.
        retries: extra attempts after a temporary failure.
        backoff: seconds before the first retry, doubled each time.
        errors: how unexpected exceptions are treated.
    """
    if len(sensors) == 1 and callable(sensors[0]):
        return rule()(sensors[0])  # the bare form: watches every sensor of its agent
    names = tuple(name for name in sensors if isinstance(name, str))
    if len(names) != len(sensors):
        raise DefinitionError(f"@rule takes sensor ids as strings, got {sensors!r}")
    topics = tuple(validate_topic(t) for t in ((on,) if isinstance(on, str) else on))
    options = HandlerOptions(timeout=timeout, retries=retries, backoff=backoff, errors=errors)

    def decorator(fn: HandlerFn) -> HandlerFn:
        spec = RuleSpec(id=id or fn.__name__, fn=fn, options=options, sensors=names, topics=topics)
        return attach(fn, spec)

    return decorator
