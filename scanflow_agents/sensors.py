"""Sensors observe: they run on a trigger and return an observation (or ``None``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn, overload

from scanflow_agents.errors import DefinitionError, NotFound
from scanflow_agents.handlers import ErrorMode, HandlerFn, HandlerOptions, HandlerSpec, attach
from scanflow_agents.sources import Runs
from scanflow_agents.triggers import OnEvent, Trigger, make_trigger


@dataclass(frozen=True, kw_only=True)
class SensorSpec(HandlerSpec):
    """A sensor: its trigger, and whether its observations are published as events.

    An interval, cron or date sensor is called as ``fn(agent)``; an event sensor
    as ``fn(agent, event)`` with the :class:`~scanflow_agents.Event` received; a
    sensor that ``reads`` MLflow as ``fn(agent, poll)`` with what is new (see
    :mod:`scanflow_agents.sources`).
    """

    kind = "sensor"

    trigger: Trigger
    publish: bool = True
    reads: Runs | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reads is not None and isinstance(self.trigger, OnEvent):
            raise DefinitionError(f"{self}: a sensor that reads MLflow needs a time trigger")

    @property
    def on_event(self) -> bool:
        return isinstance(self.trigger, OnEvent)

    def __str__(self) -> str:
        return f"sensor '{self.id}' ({self.trigger})"


def sensor_of(agent: str, sensors: Mapping[str, SensorSpec], sensor_id: str) -> SensorSpec:
    """The sensor ``sensor_id`` among an agent's ``sensors``.

    Raises:
        NotFound: the agent has no such sensor (the message names those it has).
    """
    try:
        return sensors[sensor_id]
    except KeyError:
        known = ", ".join(sorted(sensors)) or "none"
        raise NotFound(f"agent '{agent}' has no sensor '{sensor_id}' (sensors: {known})") from None


@overload
def sensor(fn: HandlerFn, /) -> NoReturn: ...


@overload
def sensor(
    fn: None = None,
    /,
    *,
    every: float | timedelta | None = None,
    cron: str | None = None,
    at: datetime | None = None,
    on: str | None = None,
    id: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    errors: ErrorMode = "temporary",
    publish: bool = True,
    reads: Runs | None = None,
) -> Callable[[HandlerFn], HandlerFn]: ...


def sensor(
    fn: HandlerFn | None = None,
    /,
    *,
    every: float | timedelta | None = None,
    cron: str | None = None,
    at: datetime | None = None,
    on: str | None = None,
    id: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    errors: ErrorMode = "temporary",
    publish: bool = True,
    reads: Runs | None = None,
) -> Callable[[HandlerFn], HandlerFn]:
    """Declare a method as a sensor. Exactly one trigger keyword is required.

    Args:
        every: run every so many seconds (or a ``timedelta``).
        cron: run on a cron expression (5 fields, or 6 with seconds first).
        at: run once at this time-zone-aware moment.
        on: run when an event arrives on this topic pattern (e.g. ``serving.digits.*``).
        id: the sensor's name; defaults to the method name.
        timeout: seconds one run may take.
        retries: extra attempts after a temporary failure.
        backoff: seconds before the first retry, doubled each time.
        errors: how unexpected exceptions are treated (``temporary`` by default).
        publish: publish each observation on ``observation.<agent>.<sensor>``.
        reads: MLflow runs to read incrementally; the sensor gets only what is new.
    """
    if fn is not None:
        # A bare @sensor: it has no trigger, and guessing one would hide the mistake.
        raise DefinitionError(
            f"@sensor on {getattr(fn, '__qualname__', fn)!r} needs a trigger: write "
            "@sensor(every=30), @sensor(cron='0 3 * * *'), @sensor(at=...) or @sensor(on='topic')"
        )
    trigger = make_trigger(every=every, cron=cron, at=at, on=on)
    options = HandlerOptions(timeout=timeout, retries=retries, backoff=backoff, errors=errors)

    def decorator(fn: HandlerFn) -> HandlerFn:
        spec = SensorSpec(
            id=id or fn.__name__,
            fn=fn,
            options=options,
            trigger=trigger,
            publish=publish,
            reads=reads,
        )
        return attach(fn, spec)

    return decorator
