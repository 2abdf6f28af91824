"""The settings reference of the built-in agents, generated from their settings models.

``python -m scanflow_agents.builtin.reference`` writes ``agents/SETTINGS.md`` (or the
path given); ``--check`` only compares and exits 1 when the file differs, so the
reference cannot drift from the code (a test runs the check).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from scanflow_agents.builtin.checker.settings import CheckerSettings
from scanflow_agents.builtin.improver.settings import ImproverSettings
from scanflow_agents.builtin.planner.settings import PlannerSettings
from scanflow_agents.builtin.tracker.settings import TrackerSettings

#: Each agent's section of the settings tree, in the order of the MAPE-K loop.
SECTIONS: dict[str, type[BaseModel]] = {
    "tracker": TrackerSettings,
    "checker": CheckerSettings,
    "improver": ImproverSettings,
    "planner": PlannerSettings,
}
DEFAULT_PATH = Path(__file__).with_name("SETTINGS.md")

_HEADER = """\
# Settings of the built-in agents

Generated from the agents' settings models by
`python -m scanflow_agents.builtin.reference`; do not edit by hand (a test
compares this file with the models).

Each agent reads its section `agents.<agent>` of the settings tree: in a
settings file (`--settings`), in the Helm values, or from the environment as
`SCANFLOW_AGENTS__<AGENT>__<FIELD>` (nested fields joined by `__`, e.g.
`SCANFLOW_AGENTS__IMPROVER__SCALING__MAX_REPLICAS=6`; objects and lists as
JSON). Unknown keys are refused with the key named.
"""


def render() -> str:
    """The whole reference, as markdown."""
    parts = [_HEADER]
    for agent, model in SECTIONS.items():
        parts.append(f"\n## {agent}\n\n{_doc(model)}\n")
        parts.append(_table(model, f"agents.{agent}"))
    return "".join(parts)


def _table(model: type[BaseModel], prefix: str) -> str:
    rows = ["", "| setting | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}"
        rows.append(
            f"| `{path}` | {_type(field.annotation)} | {_default(field)} | "
            f"{_cell(field.description or _nested_doc(field.annotation))} |"
        )
        for inner in _models(field.annotation):
            key = f"{path}.<name>" if _is_mapping(field.annotation) else path
            nested.append((key, inner))
    text = "\n".join(rows) + "\n"
    for key, inner in nested:
        text += f"\n### `{key}`\n\n{_doc(inner)}\n" + _table(inner, key)
    return text


def _doc(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""


def _nested_doc(annotation: Any) -> str:
    inner = _models(annotation)
    return f"{_doc(inner[0])} (below)" if inner else ""


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The settings models inside an annotation (a field of a model type, or of a dict of it)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[0])} to {_type(args[1])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
        value = {k: {} for k in value}  # each with its defaults, below
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    """Write the reference, or with ``--check`` compare it; 1 when it differed."""
    parser = argparse.ArgumentParser(prog="python -m scanflow_agents.builtin.reference")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="Compare only; exit 1 if it differs.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date: run python -m scanflow_agents.builtin.reference")
            return 1
        return 0
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
