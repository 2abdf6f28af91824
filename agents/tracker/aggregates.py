"""Serving windows as MLflow metrics: one run per workflow node, one step per window.

What MLflow keeps of serving at fleet size. Each model-server replica logging
every number of its report (about 350 metrics every 10 s) is 35,000 metrics a
second for a thousand replicas, more than a tracking server takes. The tracker
already adds the replicas up per window, so it logs the window's figures
instead: at most :data:`METRICS` per workflow node per window, whatever the
number of replicas (``bench/fleet.py`` measures both).

A write waits at most ``timeout`` seconds, and after a failed one no write is
tried for ``pause`` seconds: the serving sensor handles reports one at a time,
and MLflow being slow or away must not hold the reports of the next windows.
A window not logged is kept in its observation all the same (the audit trail,
and the MLflow copy of it where ``mlflow.record`` is on).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from scanflow_agents.knowledge import NODE_TAG, WORKFLOW_TAG, KnowledgeClient

logger = logging.getLogger("scanflow_agents.builtin.tracker")

# The figures of a window logged as metrics: (metric, path in the observation).
METRICS = (
    ("requests", ("requests",)),
    ("rps", ("rps",)),
    ("errors", ("errors",)),
    ("error_rate", ("error_rate",)),
    ("latency_p50_ms", ("latency_ms", "p50")),
    ("latency_p95_ms", ("latency_ms", "p95")),
    ("latency_p99_ms", ("latency_ms", "p99")),
    ("probe_ms", ("probe_ms",)),
    ("replicas", ("replicas",)),
    ("labels_matched", ("labels", "matched")),
    ("accuracy", ("accuracy",)),
)


def window_metrics(observation: dict[str, Any]) -> dict[str, float]:
    """The numbers of a closed window's observation that MLflow keeps (missing ones left out)."""
    metrics: dict[str, float] = {}
    for name, path in METRICS:
        value: Any = observation
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            metrics[name] = float(value)
    return metrics


class ServingLog:
    """Logs closed serving windows to one MLflow run per workflow node.

    Args:
        knowledge: the tracker's MLflow client.
        experiment: the experiment of the runs.
        timeout: seconds one window's write may take before it is given up.
        pause: seconds without a write after a failed one.
    """

    def __init__(
        self,
        knowledge: KnowledgeClient,
        experiment: str,
        *,
        timeout: float = 5.0,
        pause: float = 60.0,
    ) -> None:
        self.knowledge = knowledge
        self.experiment = experiment
        self.timeout = timeout
        self.pause = pause
        self.runs: dict[tuple[str, str], str] = {}
        self._quiet_until = 0.0  # loop time before which no write is tried

    async def log(self, observation: dict[str, Any]) -> bool:
        """Log one closed window; whether it was written."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._quiet_until:
            return False  # MLflow failed a moment ago: the observation keeps this window
        workflow, node = str(observation["workflow"]), str(observation["node"])
        window = observation["window"]
        metrics = window_metrics(observation)
        try:
            async with asyncio.timeout(self.timeout):
                run_id = await self._run(workflow, node)
                at_ms = int(float(window["end"]) * 1000)
                step = int(float(window["start"]) // float(window["seconds"]))
                await self.knowledge.log_batch(
                    run_id, metrics=[(key, value, at_ms, step) for key, value in metrics.items()]
                )
        except Exception as exc:
            self._quiet_until = loop.time() + self.pause
            logger.warning(
                "tracker: the window of %s/%s ending at %s is not in MLflow (%s); its "
                "observation keeps it; no window is logged for %g s",
                workflow,
                node,
                window.get("end"),
                exc or type(exc).__name__,
                self.pause,
            )
            return False
        return True

    async def _run(self, workflow: str, node: str) -> str:
        run_id = self.runs.get((workflow, node))
        if run_id is None:
            experiment = await self.knowledge.experiment_id(self.experiment, create=True)
            assert experiment is not None
            run_id = await self.knowledge.create_run(
                experiment,
                run_name=f"serving-{workflow}-{node}",
                tags={WORKFLOW_TAG: workflow, NODE_TAG: node, "scanflow.agent": "tracker"},
            )
            self.runs[(workflow, node)] = run_id
        return run_id

    async def close(self) -> None:
        """End the runs (a restarted tracker starts new ones)."""
        for run_id in self.runs.values():
            try:
                async with asyncio.timeout(self.timeout):
                    await self.knowledge.end_run(run_id)
            except Exception as exc:
                logger.warning("tracker: serving run %s not ended: %s", run_id, exc)
        self.runs.clear()
