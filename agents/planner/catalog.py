"""The applications the planner knows, and their workflows by name.

Workflow names are the planner's handles (``run(workflow="train")``), so they
are unique across the applications of one planner: applying an application
that would take over another application's workflow is refused, rather than
silently redirecting the other team's calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scanflow_agents import BadInput, NotFound
from scanflow_agents.workflows import Application, Workflow, WorkflowError, load_application

_LISTS = {"workflows": "workflow", "nodes": "node", "agents": "agent"}
_UNION_TAGS = ("executor", "service")


class Catalog:
    """Applications by name, workflows by name, and which application owns each workflow."""

    def __init__(self) -> None:
        self.applications: dict[str, Application] = {}
        self.owners: dict[str, str] = {}

    def parse(self, data: dict[str, Any], *, base_dir: str | None = None) -> Application:
        """Validate an application given as a dict (as it came over the wire).

        Args:
            data: The application; relative entry points are found in ``base_dir``.
            base_dir: Where the workflows' scripts are, on the platform's machine.

        Raises:
            BadInput: The definition is invalid (``field`` is the path of the first
                problem, with names for list items, e.g.
                ``application.workflows.serve.nodes.model.replicas``), or it would
                take over a workflow of another application.
        """
        data = _with_base_dir(data, base_dir)
        try:
            application = load_application(data)
        except WorkflowError as exc:
            name = data.get("name", "?")
            raise BadInput(
                f"application {name!r} is invalid: {'; '.join(exc.problems)}",
                field=_first_field(data),
                details=exc.problems,
            ) from None
        self._check_owners(application)
        return application

    def load(self, path: Path) -> Application:
        """Read an application file (its folder is where its scripts are).

        Raises:
            WorkflowError: The file's definition is invalid.
            BadInput: It would take over a workflow of another application.
        """
        application = load_application(path)
        self._check_owners(application)
        return application

    def register(self, application: Application) -> None:
        """Know ``application`` (replacing an earlier version of it)."""
        old = self.applications.get(application.name)
        if old is not None:
            for workflow in old.workflows:
                self.owners.pop(workflow.name, None)
        self.applications[application.name] = application
        for workflow in application.workflows:
            self.owners[workflow.name] = application.name

    def workflow(self, name: str) -> Workflow:
        """The workflow called ``name``.

        Raises:
            NotFound: No applied application has it (the known ones are listed).
        """
        owner = self.owners.get(name)
        if owner is None:
            known = ", ".join(sorted(self.owners)) or "none; apply an application first"
            raise NotFound(f"no workflow {name!r} is known to the planner (workflows: {known})")
        return self.applications[owner].workflow(name)

    def _check_owners(self, application: Application) -> None:
        for workflow in application.workflows:
            owner = self.owners.get(workflow.name)
            if owner is not None and owner != application.name:
                raise BadInput(
                    f"workflow {workflow.name!r} of application {application.name!r} already "
                    f"belongs to application {owner!r}; rename it or delete that application",
                    field=f"application.workflows.{workflow.name}.name",
                )


def stored_form(application: Application) -> dict[str, Any]:
    """The application as the planner stores it in MLflow: its definition, and each
    workflow's script folder on this machine, so that another planner replica or a
    restarted planner on the same machine finds the scripts when it reads it back
    (on Kubernetes, where scripts live in images, the folder is not used)."""
    data = application.model_dump(mode="json")
    for workflow, dumped in zip(application.workflows, data["workflows"], strict=True):
        if workflow.base_dir is not None:
            dumped["base_dir"] = str(workflow.base_dir)
    return data


def summary(application: Application) -> list[dict[str, Any]]:
    """What ``apply`` answers for each workflow: kind, nodes in dependency order, edges."""
    return [
        {
            "name": workflow.name,
            "kind": workflow.kind,
            "nodes": list(workflow.topological_order()),
            "executors": [node.name for node in workflow.executors],
            "services": [node.name for node in workflow.services],
            "edges": [list(edge) for edge in workflow.edges],
        }
        for workflow in application.workflows
    ]


def _with_base_dir(data: dict[str, Any], base_dir: str | None) -> dict[str, Any]:
    if base_dir is None or not isinstance(data.get("workflows"), list):
        return data
    workflows = [
        {"base_dir": base_dir, **w} if isinstance(w, dict) else w for w in data["workflows"]
    ]
    return {**data, "workflows": workflows}


def _first_field(data: dict[str, Any]) -> str:
    """The path of the first problem in ``data``, naming list items by their names.

    The loader words problems for people; a caller that highlights a form field
    needs a path. Validating again costs nothing next to a refused call.
    """
    try:
        Application.model_validate(data)
    except ValidationError as exc:
        return _named_path(data, exc.errors()[0]["loc"])
    return "application"


def _named_path(data: Any, loc: tuple[Any, ...]) -> str:
    parts = ["application"]
    node = data
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            node = node[part]
            named = str(loc[i - 1]) in _LISTS and isinstance(node, dict) and node.get("name")
            parts.append(str(node["name"]) if named else str(part))
        elif isinstance(node, dict) and part in node:
            node = node[part]
            parts.append(str(part))
        elif part in _UNION_TAGS:
            continue  # the tag pydantic adds for the node kind, not a field
        else:
            node = None
            parts.append(str(part))
    return ".".join(parts)
