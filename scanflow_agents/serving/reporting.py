"""Periodic serving reports: to NATS for the tracker, to MLflow as its memory.

Every ``report_interval`` seconds the replica takes its window of counters
(requests, latency percentiles, errors, input and prediction summaries,
labelled accuracy, the probe's round trip, the service's objectives) and sends
it as one JSON event on ``scanflow.<namespace>.telemetry.serving.<workflow>.<node>``
and as metrics of an MLflow run tagged ``scanflow.workflow``/``scanflow.node``/
``scanflow.replica``.
Each replica reports on its own; the tracker adds them up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

from scanflow_agents._kit.tasks import guarded, stop
from scanflow_agents.redaction import redact
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.probing import ProbeTimeout, probe
from scanflow_agents.serving.stats import ServingStats
from scanflow_agents.settings import NatsSettings, Settings

logger = logging.getLogger(__name__)


def envelope(kind: str, source: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Wrap ``payload`` in the message envelope (the one place that knows it).

    The fields and their JSON forms are those of ``scanflow_agents.messages.Envelope``
    (schema version 1); the server is an adapter and does not import the core.
    """
    message_id = uuid.uuid4().hex
    return {
        "v": 1,
        "id": message_id,
        "kind": kind,
        "source": source,
        "correlation_id": message_id,  # a report starts its own chain
        "time": datetime.now(UTC).isoformat(),
        "payload": payload,
    }


def nats_settings(config: ServingConfig) -> NatsSettings:
    """How a model server connects to NATS: the settings tree's ``nats`` section, read
    from the environment as an agent reads it (user, password, token, nkeys, creds, TLS
    files: ``SCANFLOW_NATS__*``), to the server's own ``--nats-url``.

    The process has no settings file: the platform gives its pods these variables,
    the same the agents get, so a NATS with authentication on takes their reports.
    """
    return Settings.load().nats.model_copy(update={"url": config.nats_url})


def subject(config: ServingConfig) -> str:
    """The NATS subject a replica's serving reports go to."""
    # Telemetry, not audit: the namespace's telemetry stream keeps it (scanflow_agents.subjects).
    return f"scanflow.{config.namespace}.telemetry.serving.{config.workflow}.{config.node}"


class Reporter:
    """Sends a report every interval while entered, and a last one on exit."""

    def __init__(
        self,
        config: ServingConfig,
        stats: ServingStats,
        served: Callable[[], str | None] | None = None,
        *,
        active: Callable[[], bool] | None = None,
    ) -> None:
        """``served`` answers the registered version being served, once the model is loaded;
        ``active`` whether the replica is in the rotation (a standby neither reports nor
        probes: it is no replica of the service yet)."""
        self.config = config
        self.stats = stats
        self.served = served
        self.active = active or (lambda: True)
        self.sequence = 0
        self.probe_ms: float | None = None  # the last probe's median round trip
        self.probe_timed_out = False  # and if so, probe_ms is only a lower bound
        self._nats: Any = None
        self._mlflow: _MlflowLog | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reporter:
        if self.config.nats_url:
            self._nats = await self._connect()
        if self.config.report_tracking_uri:
            self._mlflow = _MlflowLog(self.config)
        name = f"serving reports of {self.config.workflow}/{self.config.node}/{self.config.replica}"
        self._task = guarded(self._loop(), name=name, logger=logger)
        return self

    async def _connect(self) -> Any:
        """A NATS connection made as an agent's is, or ``None`` (reports go to MLflow only)."""
        from scanflow_agents.transports.connecting import (
            ConnectFailed,
            ConnectSetupError,
            open_connection,
        )

        name = f"serving {self.config.workflow}/{self.config.node}/{self.config.replica}"
        # Reports are best effort: bad connection settings, or a missing or refusing
        # NATS, must not stop serving.
        try:
            settings = nats_settings(self.config)
        except ValueError as exc:  # pydantic's ValidationError and UnknownSetting are ones
            logger.warning(
                "model server %s: bad NATS settings in the environment (%s); reports go to "
                "MLflow only",
                self.config.replica,
                redact(str(exc)),
            )
            return None
        try:
            return await open_connection(settings, name=name)
        except (ConnectSetupError, ConnectFailed) as exc:
            logger.warning(
                "model server %s: no NATS at %s (%s); reports go to MLflow only",
                self.config.replica,
                redact(settings.url),
                exc,
            )
            return None

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await stop(self._task)
        if self.active():
            await self.report()  # What came since the last tick is not lost on a rollout.
        if self._nats is not None:
            await self._nats.drain()
        if self._mlflow is not None:
            await asyncio.to_thread(self._mlflow.finish)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_interval)
            if not self.active():
                continue
            if self.config.probe:
                await self._probe()
            await self.report()

    async def _probe(self) -> None:
        # The replica's own admin port when it has one (the shared port may lead to a
        # sibling): the same listener code, the same event loop as the traffic's.
        port = self.config.admin_port or self.config.port
        self.probe_timed_out = False
        try:
            self.probe_ms = await probe(self.config.host, port)
        except ProbeTimeout as exc:
            # Overloaded: the bound goes into the report, where it breaches the objective.
            self.probe_ms, self.probe_timed_out = exc.at_least_ms, True
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            logger.debug("model server %s: probe failed: %r", self.config.replica, exc)
            self.probe_ms = None

    async def report(self) -> dict[str, Any]:
        """Take the current window and send it; returns the report payload."""
        self.sequence += 1
        payload = {
            "workflow": self.config.workflow,
            "node": self.config.node,
            "replica": self.config.replica,
            "model_uri": self.config.model_uri,
            "sequence": self.sequence,
            **self.stats.take_window(),
        }
        if self.probe_ms is not None:
            payload["probe_ms"] = round(self.probe_ms, 3)
            if self.probe_timed_out:
                payload["probe_timed_out"] = True
        if self.config.latency_p95_ms is not None:
            payload["objectives"] = {"latency_p95_ms": self.config.latency_p95_ms}
        # The version behind an alias, for whoever tells models apart (the tracker).
        if (version_uri := self.served() if self.served else None) is not None:
            payload["model_version_uri"] = version_uri
        if self._nats is not None:
            message = envelope(
                "event",
                f"serving/{self.config.workflow}/{self.config.node}/{self.config.replica}",
                payload,
            )
            try:
                # orjson: a report carries its input sample (256 rows of every feature),
                # and the standard encoder held the event loop ~16 ms for it.
                await self._nats.publish(subject(self.config), orjson.dumps(message))
            except Exception as exc:
                logger.warning(
                    "model server %s: report %d not published: %s",
                    self.config.replica,
                    self.sequence,
                    exc,
                )
        if self._mlflow is not None:
            try:
                await asyncio.to_thread(self._mlflow.log, payload, self.sequence)
            except Exception as exc:
                logger.warning(
                    "model server %s: report %d not logged to MLflow: %s",
                    self.config.replica,
                    self.sequence,
                    exc,
                )
        return payload


class _MlflowLog:
    """One MLflow run per replica; blocking, so only ever called from a thread."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.run_id: str | None = None
        self._client: Any = None

    def log(self, payload: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        if self._client is None:
            self._start()
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in flatten(payload).items()]
        for start in range(0, len(metrics), 900):  # MLflow takes 1,000 per batch.
            self._client.log_batch(self.run_id, metrics=metrics[start : start + 900])

    def finish(self) -> None:
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id)

    def _start(self) -> None:
        from mlflow.tracking import MlflowClient

        config = self.config
        # An explicit client: no process-wide "active run" that other code
        # in the process could log into by accident.
        self._client = MlflowClient(config.report_tracking_uri)
        experiment = self._client.get_experiment_by_name(config.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._client.create_experiment(config.experiment)
        )
        run = self._client.create_run(
            experiment_id,
            run_name=f"{config.node}-{config.replica}",
            tags={
                "scanflow.workflow": config.workflow,
                "scanflow.node": config.node,
                "scanflow.replica": config.replica,
                "scanflow.kind": "serving",
                "scanflow.model_uri": config.model_uri,
            },
        )
        self.run_id = run.info.run_id


def flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a report as MLflow metric names (``latency_ms.p95``)."""
    out: dict[str, float] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if name in ("window.start", "window.end"):
            continue  # Times, not measurements; MLflow stamps each metric anyway.
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and key != "sequence":
            out[_metric_name(name)] = float(value)
    return out


def _metric_name(name: str) -> str:
    # MLflow allows letters, digits and _-./ and spaces; class labels may hold anything.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
