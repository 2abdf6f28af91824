"""Plain, JSON-able copies of what the adapter reads from MLflow.

Agents get these instead of MLflow's entities: they are frozen, cheap to log,
to put in an observation payload or to compare in a test, and they do not tie
the core to MLflow's classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Tag naming the workflow a run belongs to (set by the workflow's nodes).
WORKFLOW_TAG = "scanflow.workflow"
#: Tag naming the workflow node (executor or service) that produced a run.
NODE_TAG = "scanflow.node"
#: Tag naming the team (application namespace) a run belongs to.
TEAM_TAG = "scanflow.team"

#: Run statuses after which a run gets no more metric points.
TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as first seen.

    Attributes:
        run_id: MLflow run id.
        experiment_id: Experiment the run belongs to.
        name: Run name.
        status: RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.
        start_time: Milliseconds since the epoch.
        end_time: Milliseconds since the epoch, or None while running.
        metrics: Latest value of every metric.
        params: All params.
        tags: All tags, MLflow's own (``mlflow.*``) included.
    """

    run_id: str
    experiment_id: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the run reached a terminal status."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_run(cls, run: Any) -> RunRecord:
        """Copy an ``mlflow.entities.Run``."""
        info, data = run.info, run.data
        return cls(
            run_id=info.run_id,
            experiment_id=str(info.experiment_id),
            name=info.run_name or "",
            status=info.status,
            start_time=int(info.start_time or 0),
            end_time=int(info.end_time) if info.end_time else None,
            metrics=dict(data.metrics),
            params=dict(data.params),
            tags=dict(data.tags),
        )


@dataclass(frozen=True, order=True)
class MetricPoint:
    """One logged value of one metric of one run.

    Attributes:
        timestamp: Milliseconds since the epoch, as logged.
        step: The step it was logged at.
        run_id: MLflow run id.
        key: Metric name.
        value: The value.
    """

    timestamp: int
    step: int
    run_id: str
    key: str
    value: float


@dataclass(frozen=True)
class ModelVersionRecord:
    """One version of a registered model.

    Attributes:
        name: Registered model name.
        version: Version number, as MLflow's string.
        run_id: Run that produced it, if any.
        source: Where the model files are.
        status: READY, PENDING_REGISTRATION or FAILED_REGISTRATION.
        aliases: Aliases pointing at this version.
        tags: Version tags.
        creation_time: Milliseconds since the epoch.
    """

    name: str
    version: str
    run_id: str | None
    source: str
    status: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    creation_time: int = 0

    @classmethod
    def from_version(cls, version: Any) -> ModelVersionRecord:
        """Copy an ``mlflow.entities.model_registry.ModelVersion``."""
        return cls(
            name=version.name,
            version=str(version.version),
            run_id=version.run_id or None,
            source=version.source or "",
            status=str(version.status),
            aliases=tuple(version.aliases or ()),
            tags=dict(version.tags or {}),
            creation_time=int(version.creation_timestamp or 0),
        )
