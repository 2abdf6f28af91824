"""What platform operations answer: structured, comparable, JSON-ready.

Every operation says what it did (``outcome``), so a planner retrying a call
learns "unchanged" instead of creating a second service, and an operator reads
why in ``message``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

Outcome = Literal["created", "updated", "unchanged", "deleted", "absent", "failed"]
RunState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
NodeState = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]


class PlatformError(RuntimeError):
    """An operation could not be done; ``code`` says which kind of failure.

    Codes: ``not_found`` (no such workflow, node or run), ``invalid`` (the
    request does not fit the workflow), ``failed`` (the platform tried and failed).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ActionResult(BaseModel):
    """The result of one change to one node (or a whole workflow)."""

    action: str
    workflow: str
    node: str | None = None
    outcome: Outcome
    message: str
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether anything on the platform changed."""
        return self.outcome in ("created", "updated", "deleted")


def action_result(
    action: str, workflow: str, node: str | None, outcome: Outcome, message: str, **details: Any
) -> ActionResult:
    """An :class:`ActionResult` from positional parts and keyword details."""
    return ActionResult(
        action=action,
        workflow=workflow,
        node=node,
        outcome=outcome,
        message=message,
        details=details,
    )


def overall(outcomes: Iterable[Outcome]) -> Outcome:
    """One outcome for many: all the same (none: ``unchanged``), or ``updated``."""
    found = set(outcomes)
    if not found or found == {"unchanged"}:
        return "unchanged"
    if found == {"created"}:
        return "created"
    return "updated"


class DeployResult(BaseModel):
    """The result of deploying a workflow: one action per service node."""

    workflow: str
    outcome: Outcome
    services: list[ActionResult]


class NodeEnvironment(BaseModel):
    """Where a node's code runs: the interpreter and the requirements it got."""

    node: str
    python: str
    requirements_hash: str | None = Field(default=None, description="None: the platform's own env.")
    reused: bool = Field(description="True if an existing environment was used as it was.")


class BuildResult(BaseModel):
    """The result of building a workflow (or every workflow of an application)."""

    target: str
    outcome: Outcome
    environments: list[NodeEnvironment]


class NodeRun(BaseModel):
    """One node's part of a batch run."""

    node: str
    state: NodeState = "pending"
    exit_code: int | None = None
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_path: str | None = None


class RunStatus(BaseModel):
    """A batch run: its state, and each node's."""

    run_id: str
    workflow: str
    state: RunState = "pending"
    nodes: dict[str, NodeRun]
    failed_node: str | None = None
    exit_code: int | None = None
    message: str = ""
    run_dir: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        """Whether the run has ended, one way or another."""
        return self.state in ("succeeded", "failed", "cancelled")

    def finish(self) -> None:
        """End the run: nodes never started are skipped (with why), the final state is set.

        The same on every platform: a failed node fails the run, a cancelled run
        stays cancelled, and a run whose nodes all ran succeeded.
        """
        self.finished_at = time.time()
        for record in self.nodes.values():
            if record.state == "pending":
                record.state = "skipped"
                record.reason = (
                    f"not started: node {self.failed_node!r} failed"
                    if self.failed_node
                    else "not started: run cancelled"
                    if self.state == "cancelled"
                    else "not started"
                )
        if self.state == "running":
            self.state = "failed" if self.failed_node else "succeeded"
            if not self.message:
                self.message = f"all {len(self.nodes)} node(s) succeeded"


class ReplicaStatus(BaseModel):
    """One replica process of a service."""

    replica: str
    pid: int | None
    model_uri: str
    alive: bool
    ready: bool
    admin_url: str | None = None
    started_at: float | None = None


class ServiceStatus(BaseModel):
    """An online service: its address, the model it serves and its replicas.

    ``model_uri`` is what ready replicas serve now; during a rollout (or a
    stuck one) it differs from ``desired_model_uri``, what was asked for, and
    may name two models (``"a, b"``) while both serve.
    """

    workflow: str
    node: str
    url: str
    model_uri: str
    desired_replicas: int
    ready_replicas: int
    replicas: list[ReplicaStatus]
    desired_model_uri: str | None = None
    rollout: Literal["complete", "progressing", "failed"] | None = None
    rollout_message: str | None = None


class WorkflowStatus(BaseModel):
    """All a platform knows about a workflow: services and recent runs."""

    workflow: str
    deployed: bool
    services: list[ServiceStatus] = Field(default_factory=list)
    runs: list[RunStatus] = Field(default_factory=list)
