"""MkDocs hook: reference tables generated from the code at every build.

A page asks for a table with a marker on a line of its own, such as
``<!-- reference: application -->``; the hook replaces it with tables read
from the pydantic models, so the configuration reference cannot fall behind
the code (there is no copy to keep current).
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from scanflow_agents.builtin.reference import _cell, _default
from scanflow_agents.builtin.reference import _type as type_of

# Meanings of the fields whose models carry no description (the names of a
# DNS-1123 label carry only the type's). A field with neither fails the build,
# so a new field cannot reach the reference without saying what it is.
_MEANINGS = {
    "Application.name": "The application's name.",
    "Application.team": "The team that owns it: its MLflow experiment `scanflow/<team>`, "
    "and its namespace on Kubernetes.",
    "Application.workflows": "Its workflows (below).",
    "Application.agents": "Agents that run next to its workflows (below).",
    "Workflow.name": "The workflow's name, unique in the application.",
    "Workflow.kind": "`batch`: executors that run to completion, in dependency order; "
    "`online`: services (and executors that a deploy does not run).",
    "Workflow.nodes": "Its steps and services (below); a node with a `model_uri` is a "
    "service, any other an executor, unless `kind` says otherwise.",
    "Workflow.edges": "Dependencies as `[upstream, downstream]` pairs of node names: "
    "downstream starts after upstream succeeded. No cycles.",
    "ExecutorNode.name": "The step's name, unique in the workflow.",
    "ExecutorNode.resources": "CPU and memory (below).",
    "ExecutorNode.kind": "Optional: the node's kind, when the keys alone should not decide.",
    "ExecutorNode.entry_point": "`path/to/script.py` (relative to the application file), "
    "`package.module` (run with `python -m`) or `package.module:function`.",
    "ExecutorNode.parameters": "Passed to the step as `--name value` options (to a "
    "function as keyword arguments).",
    "ServiceNode.name": "The service's name, unique in the workflow.",
    "ServiceNode.resources": "CPU and memory of each replica (below).",
    "ServiceNode.kind": "Optional: the node's kind, when the keys alone should not decide.",
    "ServiceNode.replicas": "Replicas to run (0 stops serving but keeps the service).",
    "AgentSpec.name": "The agent's name in the application.",
    "AgentSpec.config": "Its configuration: its section of `settings.agents`.",
    "Settings.nats": "How agents reach each other (below).",
    "Settings.mlflow": "Where knowledge and the audit copy go (below).",
    "Settings.agent": "How every agent of the process behaves (below).",
    "Settings.http": "Probes and metrics of `scanflow run` (below).",
    "NatsSettings.user": "User name for user-and-password authentication.",
    "NatsSettings.password": "Its password (secret).",
    "NatsSettings.token": "Token authentication (secret).",
    "MlflowSettings.username": "User name for MLflow's basic authentication.",
    "MlflowSettings.password": "Its password (secret).",
    "MlflowSettings.token": "Bearer token for MLflow (secret).",
    "AgentSettings.handlers": "Defaults of every handler's knobs (below).",
}
_MARKER = re.compile(r"^<!-- reference: ([a-z-]+) -->$", flags=re.M)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each reference marker of a page with its generated tables."""
    return _MARKER.sub(lambda match: _render(match.group(1)), markdown)


# Docstrings in the code cross-reference with Sphinx roles (:func:`~pkg.name`);
# the API page shows them as code with the name's last part, as Sphinx would.
_ROLE = re.compile(r":(?:func|class|meth|attr|mod):<code>~?(?:[\w.]*\.)?(\w+)</code>(::)?")


def on_page_content(html: str, **_: Any) -> str:
    """Turn the Sphinx roles of the API page's docstrings into plain code."""
    return _ROLE.sub(lambda m: f"<code>{m.group(1)}</code>" + (":" if m.group(2) else ""), html)


def _render(name: str) -> str:
    if name == "application":
        from scanflow_agents.workflows.graphs import AgentSpec, Application, Workflow
        from scanflow_agents.workflows.nodes import ExecutorNode, Resources, ServiceNode

        return "\n".join(
            _section(title, model, prefix)
            for title, model, prefix in (
                ("Application (the file)", Application, ""),
                ("`workflows[]`", Workflow, "workflows[]."),
                ("`workflows[].nodes[]`: an executor (batch step)", ExecutorNode, "nodes[]."),
                ("`workflows[].nodes[]`: a service (model server)", ServiceNode, "nodes[]."),
                ("`nodes[].resources`", Resources, "resources."),
                ("`agents[]`", AgentSpec, "agents[]."),
            )
        )
    if name == "settings":
        from scanflow_agents.settings import (
            AgentSettings,
            HandlerSettings,
            HttpSettings,
            MlflowSettings,
            NatsSettings,
            Settings,
        )

        return "\n".join(
            _section(title, model, prefix)
            for title, model, prefix in (
                ("The tree", Settings, ""),
                ("`nats`", NatsSettings, "nats."),
                ("`mlflow`", MlflowSettings, "mlflow."),
                ("`agent`", AgentSettings, "agent."),
                ("`agent.handlers`", HandlerSettings, "agent.handlers."),
                ("`http`", HttpSettings, "http."),
            )
        )
    if name == "status":
        from scanflow_agents import messages as m

        return "\n".join(
            _section(title, model, prefix, besides=besides)
            for title, model, prefix, besides in (
                ("Heartbeat", m.Heartbeat, "", None),
                ("Description: a heartbeat's fields, and", m.Description, "", m.Heartbeat),
                ("`sensors[]`", m.SensorStatus, "sensors[].", None),
                ("`sensors[].last`", m.LastRun, "last.", None),
                ("`rules[]`", m.RuleStatus, "rules[].", None),
                ("`actuators[]`", m.ActuatorStatus, "actuators[].", None),
                ("`consumers.<pattern>`", m.ConsumerStatus, "consumers.<pattern>.", None),
                ("Approval listing", m.ApprovalListing, "", None),
                ("`approvals[]`", m.PendingApproval, "approvals[].", None),
            )
        )
    if name == "builtin-settings":
        from scanflow_agents.builtin import reference

        # The generated file without its title: the page has its own.
        text = reference.render()
        return (
            re.sub(r"\A# .*\n", "", text).replace("\n## ", "\n### ").replace("\n### `", "\n#### `")
        )
    if name.startswith("agent-"):
        return _agent_readme(name.removeprefix("agent-"))
    if name == "agents":
        # agents/README.md under this page's title, its links made the site's.
        text = re.sub(r"\A# .*\n", "", (_ROOT / "agents" / "README.md").read_text())
        text = text.replace("](SETTINGS.md)", "](configuration.md#settings-of-the-built-in-agents)")
        return text.replace("; each\nhas its own README.", "; each\nhas its own section below.")
    if name == "chart":
        # The chart's own README, under this page's title.
        text = (_ROOT / "helm" / "scanflow-agents" / "README.md").read_text()
        return re.sub(r"\A# .*\n", "", text)
    raise ValueError(f"unknown reference marker {name!r}")


_ROOT = Path(__file__).resolve().parents[2]


def _agent_readme(agent: str) -> str:
    # A built-in agent's README, one heading level down and with its links
    # pointed at this site's pages instead of the files beside it.
    text = (_ROOT / "agents" / agent / "README.md").read_text()
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "#" + line
        lines.append(line)
    text = "\n".join(lines) + "\n"
    text = re.sub(r"\]\(\.\./SETTINGS\.md(#[a-z-]+)?\)", r"](configuration.md\1)", text)
    text = re.sub(r"\]\(\.\./([a-z]+)/README\.md\)", r"](#\1)", text)
    return re.sub(
        r"\]\(\.\./README\.md\)", "](#event-contracts-topics-under-scanflownsevents)", text
    )


def _section(
    title: str, model: type[BaseModel], prefix: str, *, besides: type[BaseModel] | None = None
) -> str:
    doc = " ".join((model.__doc__ or "").split("\n\n")[0].split())
    rows = [
        f"### {title}",
        "",
        doc,
        "",
        "| field | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        if field.exclude or (besides is not None and name in besides.model_fields):
            continue
        rows.append(
            f"| `{prefix}{field.alias or name}` | {_type(field.annotation)} | {_default(field)} | "
            f"{_cell(_meaning(model, name, field))} |"
        )
    return "\n".join(rows) + "\n"


def _meaning(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    meaning = _MEANINGS.get(f"{model.__name__}.{name}") or field.description
    if not meaning:
        raise ValueError(f"{model.__name__}.{name} has no description: say what it is")
    parts = [meaning]
    for item in field.metadata:
        for attr, word in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("min_length", "length ≥")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"({word} {value})")
    return " ".join(p for p in parts if p)


def _type(annotation: Any) -> str:
    # What the built-in agents' reference does not meet in their settings:
    # tuples (lists in YAML), Any, and the two kinds of workflow node.
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and Ellipsis not in args:
        return "[" + ", ".join(_type(a) for a in args) + "]"
    if origin is tuple:
        inner = [a for a in args if a is not Ellipsis]
        return "list of " + (" and ".join(_type(a) for a in inner) if inner else "any")
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if annotation is typing.Any:
        return "any"
    name = getattr(annotation, "__name__", "")
    return {"ExecutorNode": "executor", "ServiceNode": "service"}.get(name) or type_of(annotation)
