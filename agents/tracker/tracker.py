"""The tracker: the "monitor" of MAPE-K. It turns what workflows emit into observations.

- ``serving`` (event sensor on ``telemetry.serving.>``): each model-server replica's
  report, added up per workflow node in time windows (see :mod:`.windows`); a
  closed window becomes ``observation.tracker.serving``, which the checker
  analyses, and a step of the node's MLflow run (see :mod:`.aggregates`). The
  labelled rows of the reports are kept for retraining.
- ``trainings`` (reads MLflow): training runs that finished since the last
  poll, once each, as ``observation.tracker.trainings``.
- ``dataset`` (actuator): the recent labelled rows of a workflow node written
  as ``recent.npz`` in a new MLflow run, for the training step's ``--recent``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import Field, ValidationError
from scanflow_agents.builtin.tracker.aggregates import ServingLog
from scanflow_agents.builtin.tracker.datasets import RecentRows, upload
from scanflow_agents.builtin.tracker.settings import TrackerSettings
from scanflow_agents.builtin.tracker.windows import Windows

from scanflow_agents import Agent, Event, Interval, NotFound, Runs, actuator, sensor
from scanflow_agents.knowledge import NODE_TAG, WORKFLOW_TAG, Poll, RunRecord

logger = logging.getLogger("scanflow_agents.builtin.tracker")

#: MLflow tag of the model version a training run registered (set by the training step).
VERSION_TAG = "scanflow.model_version"

Limit = Annotated[int, Field(gt=0, le=1_000_000)]


class Tracker(Agent):
    """Windows serving reports, keeps recent labelled rows, reads finished training runs.

    Configured by ``settings.agents["tracker"]`` (see :class:`TrackerSettings`).
    """

    name = "tracker"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options = TrackerSettings()
        self._configure()

    def _configure(self) -> None:
        try:
            options = TrackerSettings.from_settings(self.settings)
        except ValidationError as exc:
            raise ValueError(f"tracker: bad settings in settings.agents.tracker: {exc}") from None
        self.options = options
        self.windows = Windows(options.window_seconds, options.sample_rows)
        self.serving_log: ServingLog | None = None
        self.recent = RecentRows(options.recent_rows)
        # What the trainings sensor reads and how often come from the settings, which
        # exist only once the agent is made: its spec is replaced on the instance.
        spec = self.sensors["trainings"]
        reads = dataclasses.replace(
            spec.reads or Runs(experiments=("digits",)),
            experiments=tuple(options.training_experiments),
        )
        trainings = dataclasses.replace(
            spec, reads=reads, trigger=Interval(options.training_poll_seconds)
        )
        self.sensors = MappingProxyType({**self.sensors, "trainings": trainings})

    async def on_start(self) -> None:
        """Validate the settings (they may have been replaced since the agent was made)."""
        self._configure()
        if self.options.serving_experiment:
            self.serving_log = ServingLog(self.knowledge, self.options.serving_experiment)
        logger.info(
            "tracker: %g s windows, training runs of %s",
            self.options.window_seconds,
            ", ".join(self.options.training_experiments),
        )

    # -- serving -------------------------------------------------------------------------

    @sensor(on="telemetry.serving.>")
    async def serving(self, event: Event) -> dict[str, Any] | None:
        """One replica's serving report; the observation of a window when it closes.

        A report without workflow or node is logged and skipped: it cannot be
        attributed, and a bad sender must not stop the windows of the others.
        """
        report = event.payload
        if not isinstance(report, dict) or not report.get("workflow") or not report.get("node"):
            logger.warning(
                "tracker: dropped a serving report from %r on %s without workflow and node",
                event.source,
                event.topic,
            )
            return None
        window = report.get("window") or {}
        at = window.get("end")
        at = float(at) if isinstance(at, int | float) else event.time.timestamp()
        self.recent.add(report)
        closed = self.windows.add(report, at)
        if closed is not None and self.serving_log is not None:
            await self.serving_log.log(closed)  # the window's figures, not every replica's
        return closed

    async def on_stop(self) -> None:
        if self.serving_log is not None:
            await self.serving_log.close()

    @actuator()
    async def labelled(self, workflow: str, node: str = "model", since: float | None = None) -> int:
        """How many labelled rows of a node the tracker keeps (since a time, if given).

        Args:
            workflow: The online workflow's name.
            node: The service node.
            since: Only rows labelled at or after this time (Unix seconds).
        """
        try:
            return len(self.recent.select(workflow, node, self.recent.limit, since=since))
        except LookupError:
            return 0

    @actuator(timeout=300)
    async def dataset(
        self,
        workflow: str,
        node: str = "model",
        limit: Limit = 5000,
        since_model: str | None = None,
        since: float | None = None,
    ) -> dict[str, Any]:
        """Write the recent labelled rows of a workflow node as ``recent.npz`` in MLflow.

        The rows go to a new run of the experiment ``settings.agents.tracker.
        datasets_experiment`` (tags ``scanflow.workflow`` and ``scanflow.node``), as
        ``x`` (float rows) and ``y`` (integer labels when all are integral, else text).

        Args:
            workflow: The online workflow's name.
            node: The service node whose rows to write.
            limit: The most rows, newest kept.
            since_model: Only rows from the first one this model URI predicted on.
            since: Only rows labelled at or after this time (Unix seconds), e.g. a
                drift's onset, so retraining sees the new distribution only.

        Raises:
            NotFound: The tracker has no labelled rows of that node (or none of
                ``since_model``).
        """
        try:
            rows = self.recent.select(workflow, node, limit, since_model, since)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        client = self.knowledge
        experiment = await client.experiment_id(self.options.datasets_experiment, create=True)
        assert experiment is not None
        models = sorted({row.served for row in rows})
        run_id = await client.create_run(
            experiment,
            run_name=f"recent-{workflow}-{node}",
            tags={WORKFLOW_TAG: workflow, NODE_TAG: node, "scanflow.agent": self.name},
        )
        try:
            await asyncio.to_thread(upload, rows, run_id, client.tracking_uri)
            await client.log_batch(
                run_id,
                metrics=[("rows", float(len(rows)), int(time.time() * 1000), 0)],
                params={
                    "limit": str(limit),
                    "since_model": since_model or "",
                    "model_uris": ",".join(models)[:500],
                },
            )
        except BaseException:
            await client.end_run(run_id, "FAILED")
            raise
        await client.end_run(run_id)
        return {
            "uri": f"runs:/{run_id}/recent.npz",
            "rows": len(rows),
            "run_id": run_id,
            "model_uris": models,
        }

    # -- trainings -----------------------------------------------------------------------

    @sensor(every=15, reads=Runs(experiments=("digits",)))
    async def trainings(self, poll: Poll) -> list[dict[str, Any]] | None:
        """Training runs that finished since the last poll, each once.

        Runs still running when first read are reported when they finish; failed
        and killed runs are left out (there is no model to judge).
        """
        seen = {run.run_id: run for run in poll.runs}
        done: list[dict[str, Any]] = []
        for run_id in poll.finished:
            run = seen.get(run_id)
            if run is None or not run.finished:
                run = await self._run(run_id)  # first read while running: metrics came later
            if run is not None and run.status == "FINISHED":
                done.append(_training(run))
        return done or None

    async def _run(self, run_id: str) -> RunRecord | None:
        from_run = RunRecord.from_run

        def get(store: Any) -> RunRecord | None:
            from mlflow.exceptions import MlflowException

            try:
                return from_run(store.get_run(run_id))
            except MlflowException:
                return None  # deleted since it was listed

        return await self.knowledge.tracking(f"reading training run {run_id}", get)


def _training(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "experiment_id": run.experiment_id,
        "workflow": run.tags.get(WORKFLOW_TAG),
        "node": run.tags.get(NODE_TAG),
        "version": run.tags.get(VERSION_TAG),
        "metrics": dict(run.metrics),
        "params": dict(run.params),
        "tags": {k: v for k, v in run.tags.items() if not k.startswith("mlflow.")},
        "end_time": run.end_time,
    }
