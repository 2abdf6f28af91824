"""Actuators act: async methods with typed parameters, callable locally and over NATS.

The parameters of an actuator's signature become a pydantic model: it validates
every call (unknown or ill-typed arguments are refused with the field named)
and its JSON schema is what other agents and the console read from the
agent's description. ``Annotated[int, Field(ge=0)]`` constraints are kept in
both.

Validation is strict by default, as JSON reads: ``true`` or ``"3"`` is not an
integer. Parameters are validated in their JSON form (a local call's values
are turned into JSON first), so dates, enums, tuples and UUIDs are accepted
as JSON carries them (ISO strings, values, arrays, strings) on the wire and
from a local call alike. ``@actuator(strict=False)`` accepts pydantic's lax
conversions instead.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticSerializationError, to_json

from scanflow_agents.errors import DefinitionError
from scanflow_agents.handlers import (
    ErrorMode,
    HandlerFn,
    HandlerOptions,
    HandlerSpec,
    arg_docs,
    attach,
)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|m|h)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True)
class Rate:
    """At most ``calls`` executions per ``period`` seconds (a sliding window)."""

    calls: int
    period: float

    def __post_init__(self) -> None:
        if self.calls < 1 or not self.period > 0:
            raise DefinitionError(f"rate needs calls >= 1 and a positive period, got {self}")

    @classmethod
    def parse(cls, value: str | tuple[int, float] | Rate) -> Rate:
        """Accept ``Rate``, ``(calls, seconds)`` or a string such as ``"10/m"`` or ``"3/30s"``."""
        if isinstance(value, Rate):
            return value
        if isinstance(value, tuple):
            return cls(int(value[0]), float(value[1]))
        match = _RATE.match(value)
        if not match:
            raise DefinitionError(f"bad rate {value!r}: write e.g. '10/m', '3/30s' or (10, 60)")
        count, amount, unit = match.groups()
        return cls(int(count), float(amount or 1) * _UNITS[unit])

    def __str__(self) -> str:
        return f"{self.calls}/{self.period:g}s"


@dataclass(frozen=True, kw_only=True)
class ActuatorSpec(HandlerSpec):
    """An actuator, its parameter model and its guards.

    Attributes:
        params: the pydantic model of the parameters (built from the signature if not given).
        cooldown: seconds after a successful execution during which new calls are rejected.
        rate: at most so many executions per period; more are rejected.
        idempotent: answer a redelivered call (same message id) from the first result.
        read_only: the actuator only reads (a status, a list): it runs even under
            dry-run, and its calls are not recorded (unless
            ``settings.agent.record_reads``, then as actions marked ``read_only``).
        strict: refuse values of the wrong JSON type (``true`` or ``"3"`` for an
            integer); ``False`` accepts pydantic's lax conversions.
    """

    kind = "actuator"

    params: type[BaseModel] = BaseModel
    cooldown: float = 0.0
    rate: Rate | None = None
    idempotent: bool = True
    read_only: bool = False
    strict: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cooldown < 0:
            raise DefinitionError(f"{self}: cooldown must not be negative, got {self.cooldown!r}")
        if self.params is BaseModel:
            object.__setattr__(self, "params", params_model(self.fn, self.id, strict=self.strict))

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the parameters, as published in the agent's description."""
        return self.params.model_json_schema()

    def validate(self, params: dict[str, Any]) -> BaseModel:
        """The parameters of one call, validated in their JSON form.

        Raises:
            pydantic.ValidationError: a missing, unknown or ill-typed parameter
                (its ``loc`` names the field); a value JSON cannot carry is
                reported the same way, on the field that holds it.
        """
        try:
            data = to_json(params)
        except PydanticSerializationError:
            # Only a local call can pass such a value (the wire carries JSON):
            # validating the Python values then names the field that is wrong.
            return self.params.model_validate(params)
        return self.params.model_validate_json(data)


def params_model(
    fn: Callable[..., Any], actuator_id: str, *, strict: bool = True
) -> type[BaseModel]:
    """Build the parameter model of an actuator from its signature (``self`` skipped).

    Parameter descriptions come from a Google-style ``Args:`` section of the
    docstring; ``Annotated`` metadata (``Field(ge=0)``, ...) is kept.
    """
    signature = inspect.signature(fn)
    try:
        # include_extras: without it Annotated[int, Field(ge=0)] becomes a bare int.
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # unresolvable forward references
        raise DefinitionError(
            f"actuator '{actuator_id}': cannot resolve annotations: {exc}"
        ) from exc
    docs = arg_docs(fn.__doc__)
    fields: dict[str, Any] = {}
    for index, (name, param) in enumerate(signature.parameters.items()):
        if index == 0:
            continue  # the agent instance
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise DefinitionError(
                f"actuator '{actuator_id}' takes {stars}{name}: "
                "name every parameter so it has a schema"
            )
        annotation = hints.get(name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        # A description given only where the docstring has one, so one inside
        # Annotated[..., Field(description=...)] is not overwritten with None.
        info = Field(default, description=docs[name]) if name in docs else Field(default)
        fields[name] = (annotation, info)
    return create_model(
        f"{actuator_id}_params",
        __config__=ConfigDict(extra="forbid", strict=strict),
        **fields,
    )


@overload
def actuator(fn: HandlerFn, /) -> HandlerFn: ...


@overload
def actuator(
    fn: None = None,
    /,
    *,
    id: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    errors: ErrorMode = "permanent",
    cooldown: float = 0.0,
    rate: str | tuple[int, float] | Rate | None = None,
    idempotent: bool = True,
    read_only: bool = False,
    strict: bool = True,
) -> Callable[[HandlerFn], HandlerFn]: ...


def actuator(
    fn: HandlerFn | None = None,
    /,
    *,
    id: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    errors: ErrorMode = "permanent",
    cooldown: float = 0.0,
    rate: str | tuple[int, float] | Rate | None = None,
    idempotent: bool = True,
    read_only: bool = False,
    strict: bool = True,
) -> HandlerFn | Callable[[HandlerFn], HandlerFn]:
    """Declare an async method as an actuator: ``@actuator`` or ``@actuator(...)``.

    Unlike sensors and rules, an actuator's unexpected exceptions are permanent by
    default: an actuator changes the world, and repeating a half-done change must
    be asked for (``errors="temporary"`` with ``retries=``).

    Args:
        id: the actuator's name on the wire; defaults to the method name.
        timeout: seconds one attempt may take.
        retries: extra attempts after a temporary failure.
        backoff: seconds before the first retry, doubled each time.
        errors: how unexpected exceptions are treated (``permanent`` by default).
        cooldown: seconds after a successful run during which calls are rejected.
        rate: at most so many runs per period, e.g. ``"10/m"``.
        idempotent: answer a redelivered call (same message id) from its first result.
        read_only: it only reads: runs even under dry-run, not recorded as an action.
        strict: refuse ill-typed values instead of converting them (``"3"`` for 3).
    """
    options = HandlerOptions(timeout=timeout, retries=retries, backoff=backoff, errors=errors)
    parsed_rate = Rate.parse(rate) if rate is not None else None

    def decorator(fn: HandlerFn) -> HandlerFn:
        spec = ActuatorSpec(
            id=id or fn.__name__,
            fn=fn,
            options=options,
            cooldown=cooldown,
            rate=parsed_rate,
            idempotent=idempotent,
            read_only=read_only,
            strict=strict,
        )
        return attach(fn, spec)

    return decorator if fn is None else decorator(fn)
