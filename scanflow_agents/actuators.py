"""Actuators act: async methods with typed parameters, callable locally and over NATS.

The parameters of an actuator's signature become a pydantic model: it validates
every call (unknown or ill-typed arguments are refused with the field named)
and its JSON schema is what other agents and the console read from the
agent's description.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from scanflow_agents.errors import DefinitionError
from scanflow_agents.handlers import ErrorMode, HandlerFn, HandlerOptions, HandlerSpec, attach

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|m|h)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_ARG_LINE = re.compile(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


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
        idempotent: running it twice does no harm, so a call whose first run was cut
            short (its process died) is run again instead of answered ``in_doubt``.
            Calls with a caller-chosen id are deduplicated either way.
    """

    kind = "actuator"

    params: type[BaseModel] = BaseModel
    cooldown: float = 0.0
    rate: Rate | None = None
    idempotent: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cooldown < 0:
            raise DefinitionError(f"{self}: cooldown must not be negative, got {self.cooldown!r}")
        if self.params is BaseModel:
            object.__setattr__(self, "params", params_model(self.fn, self.id))

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the parameters, as published in the agent's description."""
        return self.params.model_json_schema()


def params_model(fn: Callable[..., Any], actuator_id: str) -> type[BaseModel]:
    """Build the parameter model of an actuator from its signature (``self`` skipped).

    Parameter descriptions come from a Google-style ``Args:`` section of the docstring.
    """
    signature = inspect.signature(fn)
    try:
        hints = get_type_hints(fn)
    except Exception as exc:  # unresolvable forward references
        raise DefinitionError(
            f"actuator '{actuator_id}': cannot resolve annotations: {exc}"
        ) from exc
    docs = _arg_docs(fn.__doc__)
    fields: dict[str, Any] = {}
    for index, (name, param) in enumerate(signature.parameters.items()):
        if index == 0:
            continue  # the agent instance
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise DefinitionError(
                f"actuator '{actuator_id}' takes *{name}: name every parameter so it has a schema"
            )
        annotation = hints.get(name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, Field(default, description=docs.get(name)))
    return create_model(
        f"{actuator_id}_params",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )


def _arg_docs(doc: str | None) -> dict[str, str]:
    if not doc:
        return {}
    docs: dict[str, str] = {}
    in_args = False
    for line in inspect.cleandoc(doc).splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args and line and not line.startswith(" "):
            break
        match = _ARG_LINE.match(line) if in_args else None
        if match:
            docs[match.group(1)] = match.group(2).strip()
    return docs


def actuator(
    *,
    id: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    errors: ErrorMode = "permanent",
    cooldown: float = 0.0,
    rate: str | tuple[int, float] | Rate | None = None,
    idempotent: bool = False,
) -> Callable[[HandlerFn], HandlerFn]:
    """Declare an async method as an actuator.

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
        idempotent: running it twice does no harm: a redelivered call whose first run was
            cut short (its process died mid-action) runs again instead of being answered
            ``in_doubt``. A completed call is answered from its first result either way.
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
        )
        return attach(fn, spec)

    return decorator
