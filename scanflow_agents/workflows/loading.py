"""Loading applications and workflows from YAML files, YAML text and dicts.

Pydantic reports where a value is wrong as a path of indices
(``workflows.0.nodes.2.entry_point``); people fix files by names. The loader
rewrites each path into "workflow 'train', node 'fit', field 'entry_point'".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from scanflow_agents.workflows.graphs import Application, Workflow

_M = TypeVar("_M", bound=BaseModel)


class WorkflowError(ValueError):
    """A workflow or application definition is invalid.

    Attributes:
        problems: One line per problem, each naming the workflow, node and field.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid definition in {source}:\n{lines}")


def load_application(source: str | Path | dict[str, Any]) -> Application:
    """Load an application from a YAML file, YAML text or a dict.

    Args:
        source: A :class:`~pathlib.Path` to a YAML file, a string of YAML
            text, or an already parsed dict.

    Raises:
        WorkflowError: If the definition is invalid; every problem is listed.
    """
    data, origin, base_dir = _read(source)
    for workflow in data.get("workflows", None) or []:
        if isinstance(workflow, dict) and base_dir is not None:
            workflow.setdefault("base_dir", base_dir)
    return _validate(Application, data, origin)


def load_workflow(source: str | Path | dict[str, Any]) -> Workflow:
    """Load one workflow from a YAML file, YAML text or a dict.

    Args:
        source: As for :func:`load_application`, holding one workflow.

    Raises:
        WorkflowError: If the definition is invalid; every problem is listed.
    """
    data, origin, base_dir = _read(source)
    if base_dir is not None:
        data.setdefault("base_dir", base_dir)
    return _validate(Workflow, data, origin)


def _read(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str, str | None]:
    # A str is YAML text, never a path: a file name that happens not to exist
    # would otherwise be parsed as a one-word document and fail confusingly.
    if isinstance(source, dict):
        return dict(source), "a dict", None
    import yaml  # Only loading from YAML needs PyYAML.

    if isinstance(source, Path):
        text, origin, base_dir = source.read_text(), str(source), str(source.parent.resolve())
    else:
        text, origin, base_dir = source, "YAML text", None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WorkflowError(origin, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise WorkflowError(origin, [f"expected a mapping at the top, got {type(data).__name__}"])
    return data, origin, base_dir


def _validate(model: type[_M], data: dict[str, Any], origin: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, data, model) for error in exc.errors()]
        raise WorkflowError(origin, problems) from None


def _describe(error: Any, data: dict[str, Any], model: type[BaseModel]) -> str:
    where: list[str] = []
    if model is Application and data.get("name"):
        where.append(f"application {data['name']!r}")
    node: Any = data
    fields: list[str] = []
    loc = list(error["loc"])
    for i, part in enumerate(loc):
        parent_key = loc[i - 1] if i else None
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
            label = {"workflows": "workflow", "nodes": "node", "agents": "agent"}.get(
                str(parent_key)
            )
            if label and isinstance(node, dict):
                where.append(f"{label} {node.get('name', f'#{part}')!r}")
                fields.clear()
                continue
            fields.append(str(part))
        elif isinstance(node, dict) and part in node:
            node = node[part]
            # A list of named items is followed by an index, which names the
            # item instead; a list that is itself wrong is a field.
            followed_by_index = i + 1 < len(loc) and isinstance(loc[i + 1], int)
            if part not in ("workflows", "nodes", "agents") or not followed_by_index:
                fields.append(str(part))
        elif part in ("executor", "service"):
            continue  # The union tag pydantic adds; the node is already named.
        else:
            fields.append(str(part))
            node = None
    if model is Workflow and data.get("name"):
        where.insert(0, f"workflow {data['name']!r}")
    message = str(error["msg"]).removeprefix("Value error, ")
    # Graph checks name their workflow themselves (they also run outside the
    # loader); say it once.
    if where and message.startswith(f"{where[-1]}: "):
        message = message.removeprefix(f"{where[-1]}: ")
    if fields:
        where.append(f"field {'.'.join(fields)!r}")
    return f"{', '.join(where) or 'top level'}: {message}"
