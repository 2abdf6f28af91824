"""Workflows (graphs of nodes) and applications (a team's workflows and agents)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from scanflow_agents.workflows.nodes import ExecutorNode, Name, Node, ServiceNode


class Workflow(BaseModel):
    """A graph of nodes; an edge ``(a, b)`` means b starts after a succeeded.

    A ``batch`` workflow holds executors only and runs to completion; an
    ``online`` workflow holds services (and may hold executors, e.g. a warm-up
    step, which a deploy does not run).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    kind: Literal["batch", "online"] = "batch"
    nodes: tuple[Node, ...] = Field(min_length=1)
    edges: tuple[tuple[str, str], ...] = ()
    # Where relative entry points are found; set by the loader to the YAML
    # file's folder, so a workflow file is portable with its scripts.
    base_dir: Path | None = Field(default=None, exclude=True)

    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _check_graph(self) -> Workflow:
        names = [node.name for node in self.nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"workflow {self.name!r}: duplicate node name(s) {duplicates}")
        for upstream, downstream in self.edges:
            for end in (upstream, downstream):
                if end not in names:
                    raise ValueError(
                        f"workflow {self.name!r}: edge ({upstream!r}, {downstream!r}) "
                        f"names unknown node {end!r}; nodes are {names}"
                    )
            if upstream == downstream:
                raise ValueError(f"workflow {self.name!r}: node {upstream!r} depends on itself")
        if self.kind == "batch":
            services = [n.name for n in self.nodes if isinstance(n, ServiceNode)]
            if services:
                raise ValueError(
                    f"workflow {self.name!r}: service node(s) {services} in a batch workflow; "
                    "make the workflow kind 'online' or the nodes executors"
                )
        self._order = _topological_order(self.name, names, self.edges)
        return self

    def node(self, name: str) -> Node:
        """The node called ``name``.

        Raises:
            KeyError: With the workflow's node names, if there is no such node.
        """
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(
            f"workflow {self.name!r} has no node {name!r}; nodes are {[n.name for n in self.nodes]}"
        )

    def topological_order(self) -> tuple[str, ...]:
        """Node names so that every node comes after all it depends on.

        Ties keep the order in which the nodes were declared, so the order is
        stable across loads of the same file.
        """
        return self._order

    def dependencies(self, name: str) -> frozenset[str]:
        """The nodes that must succeed before ``name`` starts."""
        return frozenset(a for a, b in self.edges if b == name)

    def dependants(self, name: str) -> frozenset[str]:
        """Every node that (directly or not) waits for ``name``."""
        found: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for a, b in self.edges:
                if a == current and b not in found:
                    found.add(b)
                    frontier.append(b)
        return frozenset(found)

    @property
    def executors(self) -> tuple[ExecutorNode, ...]:
        """The executor nodes in topological order."""
        return tuple(n for n in self._iter_ordered() if isinstance(n, ExecutorNode))

    @property
    def services(self) -> tuple[ServiceNode, ...]:
        """The service nodes in topological order."""
        return tuple(n for n in self._iter_ordered() if isinstance(n, ServiceNode))

    def _iter_ordered(self) -> Iterator[Node]:
        return (self.node(name) for name in self._order)


def _topological_order(
    workflow: str, names: list[str], edges: tuple[tuple[str, str], ...]
) -> tuple[str, ...]:
    # Kahn's algorithm, always taking the first ready node in declaration order.
    pending = {n: {a for a, b in edges if b == n} for n in names}
    order: list[str] = []
    while pending:
        ready = [n for n in names if n in pending and not pending[n]]
        if not ready:
            raise ValueError(f"workflow {workflow!r}: dependency cycle among {_cycle(pending)}")
        order.append(ready[0])
        del pending[ready[0]]
        for deps in pending.values():
            deps.discard(ready[0])
    return tuple(order)


def _cycle(pending: dict[str, set[str]]) -> list[str]:
    # Walk backwards along unmet dependencies until a node repeats: that
    # stretch is one cycle, which names the nodes to fix better than "all left".
    start = next(iter(pending))
    path = [start]
    while True:
        nxt = sorted(pending[path[-1]])[0]
        if nxt in path:
            cycle = list(reversed(path[path.index(nxt) :]))
            # Start at the node declared first, so the message is stable.
            declared = list(pending)
            first = min(range(len(cycle)), key=lambda i: declared.index(cycle[i]))
            cycle = cycle[first:] + cycle[:first]
            return [*cycle, cycle[0]]
        path.append(nxt)


class AgentSpec(BaseModel):
    """An agent an application runs next to its workflows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    agent: str = Field(min_length=1, description="Built-in name or 'module:Class'.")
    config: dict[str, Any] = Field(default_factory=dict)


class Application(BaseModel):
    """A team's workflows and the agents that supervise them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    team: Name = "default"
    workflows: tuple[Workflow, ...] = ()
    agents: tuple[AgentSpec, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Application:
        for label, items in (("workflow", self.workflows), ("agent", self.agents)):
            names = [item.name for item in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"application {self.name!r}: duplicate {label} name(s) {dup}")
        return self

    def workflow(self, name: str) -> Workflow:
        """The workflow called ``name``.

        Raises:
            KeyError: With the application's workflow names, if there is none.
        """
        for workflow in self.workflows:
            if workflow.name == name:
                return workflow
        raise KeyError(
            f"application {self.name!r} has no workflow {name!r}; workflows are "
            f"{[w.name for w in self.workflows]}"
        )
