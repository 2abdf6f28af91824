"""The training contract: what a workflow step is told, and how it hands over a candidate.

A platform runs each step of a batch workflow with these environment
variables (the local platform sets all of them; on Kubernetes each step is its
own pod and there is no shared run folder):

| variable | what |
|---|---|
| ``SCANFLOW_RUN_ID`` | the platform's id of this run of the workflow |
| ``SCANFLOW_WORKFLOW``, ``SCANFLOW_NODE`` | the workflow and the step's node name |
| ``SCANFLOW_RUN_DIR`` | a folder the steps of one run share (local platform) |
| ``SCANFLOW_NAMESPACE`` | the agents' namespace |
| ``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI`` | where to log and register |

The improver finds the candidate of a retraining run through two MLflow tags
on the training step's MLflow run: ``scanflow.run_id`` (the platform's run id)
and ``scanflow.model_version`` (the registered version it made), and judges it
by two metrics of that run: ``recent_accuracy`` (the candidate) and
``production_recent_accuracy`` (the model in production), both on recent
labelled rows that were held out of training. A training step uses this
module so it never spells those names::

    import mlflow
    from scanflow_agents import training

    step = training.context()
    with mlflow.start_run(tags=step.tags()) as run:
        ...  # fit, log the model with registered_model_name=...
    training.register_candidate(
        run.info.run_id, info.registered_model_version,
        recent_accuracy=0.97, production_recent_accuracy=0.71,
    )

MLflow is imported only when a candidate is registered.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_ID_TAG = "scanflow.run_id"
WORKFLOW_TAG = "scanflow.workflow"
NODE_TAG = "scanflow.node"
MODEL_VERSION_TAG = "scanflow.model_version"
#: The candidate's accuracy on held-out recent rows, and production's on the same rows.
RECENT_ACCURACY = "recent_accuracy"
PRODUCTION_RECENT_ACCURACY = "production_recent_accuracy"
#: What ``register_candidate`` leaves in the run folder for later steps.
CANDIDATE_FILE = "candidate.json"


@dataclass(frozen=True)
class StepContext:
    """What the platform told this step (``None`` where it said nothing).

    Attributes:
        run_id: ``SCANFLOW_RUN_ID``.
        workflow: ``SCANFLOW_WORKFLOW``.
        node: ``SCANFLOW_NODE``.
        run_dir: ``SCANFLOW_RUN_DIR``, the folder the steps of a run share.
        namespace: ``SCANFLOW_NAMESPACE``.
        tracking_uri: ``MLFLOW_TRACKING_URI``.
    """

    run_id: str | None = None
    workflow: str | None = None
    node: str | None = None
    run_dir: Path | None = None
    namespace: str | None = None
    tracking_uri: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> StepContext:
        """Read the variables of the contract from ``environ`` (default: this process's)."""
        env = os.environ if environ is None else environ
        run_dir = env.get("SCANFLOW_RUN_DIR")
        return cls(
            run_id=env.get("SCANFLOW_RUN_ID") or None,
            workflow=env.get("SCANFLOW_WORKFLOW") or None,
            node=env.get("SCANFLOW_NODE") or None,
            run_dir=Path(run_dir) if run_dir else None,
            namespace=env.get("SCANFLOW_NAMESPACE") or None,
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        )

    @property
    def in_a_run(self) -> bool:
        """Whether a platform runs this step (rather than a person, by hand)."""
        return self.run_id is not None

    def tags(self) -> dict[str, str]:
        """The tags the step's MLflow run needs so agents can tell which run made it."""
        pairs = ((RUN_ID_TAG, self.run_id), (WORKFLOW_TAG, self.workflow), (NODE_TAG, self.node))
        return {tag: value for tag, value in pairs if value is not None}


def context(environ: Mapping[str, str] | None = None) -> StepContext:
    """This step's context: ``StepContext.from_environment(environ)``."""
    return StepContext.from_environment(environ)


def register_candidate(
    mlflow_run_id: str,
    version: str | int,
    *,
    recent_accuracy: float | None = None,
    production_recent_accuracy: float | None = None,
    record: Mapping[str, Any] | None = None,
    step: StepContext | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Hand the registered model ``version`` made by ``mlflow_run_id`` over as the candidate.

    Tags the MLflow run with the version (and the platform's run id, workflow and
    node if the run lacks them), logs the two accuracies the improver compares
    when given, and, in a run with a shared folder, writes ``candidate.json``
    there (for an evaluation step, or a script, to read which version to judge).

    Args:
        mlflow_run_id: The MLflow run that logged and registered the model.
        version: The registered model version it made.
        recent_accuracy: The candidate's accuracy on held-out recent rows.
        production_recent_accuracy: Production's accuracy on the same rows (omit
            when nothing is in production yet).
        record: More to write into ``candidate.json`` (e.g. the other metrics).
        step: The step's context (default: read from the environment).
        tracking_uri: The MLflow server (default: ``MLFLOW_TRACKING_URI``).

    Returns:
        What was written to ``candidate.json``: ``record`` with ``version`` and
        ``mlflow_run_id``.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    step = step or context()
    client = MlflowClient(tracking_uri or step.tracking_uri)
    existing = client.get_run(mlflow_run_id).data.tags
    tags = {tag: value for tag, value in step.tags().items() if tag not in existing}
    tags[MODEL_VERSION_TAG] = str(version)
    now = int(time.time() * 1000)
    metrics = [
        Metric(name, float(value), now, 0)
        for name, value in (
            (RECENT_ACCURACY, recent_accuracy),
            (PRODUCTION_RECENT_ACCURACY, production_recent_accuracy),
        )
        if value is not None
    ]
    # One call: the version tag appears with the metrics, never before them.
    client.log_batch(
        mlflow_run_id, metrics=metrics, tags=[RunTag(key, value) for key, value in tags.items()]
    )
    written = {**(record or {}), "version": str(version), "mlflow_run_id": mlflow_run_id}
    if step.run_dir is not None:
        step.run_dir.mkdir(parents=True, exist_ok=True)
        (step.run_dir / CANDIDATE_FILE).write_text(json.dumps(written))
    return written


def read_candidate(run_dir: Path | str) -> dict[str, Any]:
    """What the training step of a run left in ``candidate.json`` (raises if it left none)."""
    path = Path(run_dir) / CANDIDATE_FILE
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {CANDIDATE_FILE} in {run_dir}: the training step did not call "
            "scanflow_agents.training.register_candidate"
        ) from None
    return loaded
