"""Arguments of an actuator call, read one way by ``scanflow call`` and the console's ``:call``.

Words are split as a shell splits them (the shell for the CLI, ``shlex`` at
the console), then each ``key=value`` word gives one argument whose value is
read as JSON where it can be (``3``, ``true``, ``[1, 2]``, ``"3"`` the
string) and is a string otherwise. Before anything is sent the arguments are
checked against the actuator's published JSON schema; every problem is a
:class:`~scanflow_agents.errors.BadInput` naming the field, with the same
words in both places. The agent validates again, fully, when the call arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from scanflow_agents.errors import BadInput, NotFound
from scanflow_agents.messages import ActuatorStatus, Description


def parse_arguments(words: Iterable[str], params: str | None = None) -> dict[str, Any]:
    """``key=value`` words over an optional JSON object (``--params``), later words win."""
    arguments: dict[str, Any] = {}
    if params:
        try:
            given = json.loads(params)
        except json.JSONDecodeError as exc:
            raise BadInput(f"--params is not JSON: {exc}", field="--params") from None
        if not isinstance(given, dict):
            raise BadInput("--params must be a JSON object", field="--params")
        arguments.update(given)
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise BadInput(f"{word!r} is not key=value (e.g. replicas=3)", field=key or word)
        arguments[key] = _value(value)
    return arguments


def _value(text: str) -> Any:
    try:
        return json.loads(text)  # numbers, booleans, null, lists, objects, "quoted" strings
    except json.JSONDecodeError:
        return text  # anything else is a string as typed


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def check_params(schema: dict[str, Any], params: dict[str, Any]) -> None:
    """Check arguments against an actuator's JSON schema; the error names the field.

    Covers what people get wrong at a prompt: a missing required argument, an
    unknown one, a value of the wrong type or outside its bounds.
    """
    properties: dict[str, Any] = schema.get("properties", {})
    for name in params:
        if name not in properties:
            known = ", ".join(properties) or "none"
            raise BadInput(f"unknown argument '{name}' (arguments: {known})", field=name)
    for name in schema.get("required", []):
        if name not in params:
            raise BadInput(f"argument '{name}' is required", field=name)
    for name, value in params.items():
        problem = _problem(properties[name], value, schema.get("$defs", {}))
        if problem:
            raise BadInput(f"bad argument '{name}': {problem}", field=name)


def _problem(prop: dict[str, Any], value: Any, defs: dict[str, Any]) -> str | None:
    if "$ref" in prop:
        prop = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
    options = prop.get("anyOf") or prop.get("oneOf")
    if options:
        problems = [_problem(option, value, defs) for option in options]
        if all(problems):
            return " or ".join(p for p in problems if p)
        return None
    if "enum" in prop and value not in prop["enum"]:
        return f"must be one of {', '.join(map(str, prop['enum']))}"
    kind = prop.get("type")
    if kind is None:
        return None
    allowed = _JSON_TYPES.get(kind, (object,))
    if isinstance(value, bool) and kind in ("integer", "number"):
        return f"expected {kind}, got a boolean"
    if not isinstance(value, allowed):
        return f"expected {kind}, got {type(value).__name__} {value!r}"
    if isinstance(value, int | float):
        return _bounds(prop, value)
    return None


def _bounds(prop: dict[str, Any], value: float) -> str | None:
    if "minimum" in prop and value < prop["minimum"]:
        return f"{value} breaks minimum {prop['minimum']}"
    if "maximum" in prop and value > prop["maximum"]:
        return f"{value} breaks maximum {prop['maximum']}"
    if "exclusiveMinimum" in prop and value <= prop["exclusiveMinimum"]:
        return f"{value} breaks exclusiveMinimum {prop['exclusiveMinimum']}"
    if "exclusiveMaximum" in prop and value >= prop["exclusiveMaximum"]:
        return f"{value} breaks exclusiveMaximum {prop['exclusiveMaximum']}"
    return None


def checked(described: Description, actuator: str, arguments: dict[str, Any]) -> ActuatorStatus:
    """The actuator from an agent's description, once the arguments fit its schema."""
    spec = described.actuator(actuator)
    if spec is None:
        known = ", ".join(a.id for a in described.actuators) or "none"
        raise NotFound(
            f"agent '{described.agent}' has no actuator '{actuator}' (actuators: {known})"
        )
    check_params(spec.params, arguments)
    return spec
