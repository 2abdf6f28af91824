"""Serving reports of many replicas, added up into time windows per workflow node.

Windows lie on a fixed grid of ``window_seconds`` (a report at time t belongs to
the window starting at ``floor(t / seconds) * seconds``), so every tracker
replica cuts the same windows. A window closes at the first report whose time
(the end of the replica's own report window) is past its end: the tracker needs
no timer, and a window holds every report that arrived while it was open, a
late one included, so nothing is counted twice or lost.

Latency percentiles of a window are an approximation: the request-weighted mean
of the replicas' own percentiles. The exact figure would need every latency (or
a shared histogram); with replicas that see the same traffic the two agree
closely, and a slow replica still pulls the figure up in proportion to its load.

``probe_ms`` is the worst of the replicas' probes (the round trip a kept-alive
client pays beyond the handler; see ``scanflow_agents.serving.probing``): a
client stuck to the slow replica feels that one. ``objectives`` are the
service's own, as its replicas were deployed with them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents.builtin.tracker.deviations import ReplicaMoments

_PERCENTILES = ("p50", "p95", "p99")


@dataclass
class Window:
    """One open window of one workflow node.

    Its input rows are a reservoir of at most ``capacity`` rows, uniform over
    every row the replicas' samples brought: a window's memory does not grow
    with the number of replicas reporting into it (a thousand replicas bring
    a quarter of a million rows a window).
    """

    workflow: str
    node: str
    start: float
    seconds: float
    capacity: int = 2_000
    rng: random.Random = field(default_factory=random.Random)
    reports: int = 0
    replicas: dict[str, str] = field(default_factory=dict)  # replica -> last model URI
    model_uris: list[str] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    latency: dict[str, list[float]] = field(
        default_factory=lambda: {p: [0.0, 0.0] for p in _PERCENTILES}  # weighted sum, weight
    )
    received: int = 0
    matched: int = 0
    correct: int = 0
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    row_models: list[int] = field(default_factory=list)  # index into model_uris, per row
    rows_seen: int = 0  # rows offered to the reservoir
    moments: ReplicaMoments = field(default_factory=ReplicaMoments)  # per replica and feature
    probe_ms: float | None = None
    objectives: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.seconds

    def add(self, report: dict[str, Any]) -> None:
        """Add one replica's report."""
        # The version a replica really serves (it resolved its alias when it loaded),
        # else the URI it was deployed with: an alias that moved is a new model here.
        uri = str(report.get("model_version_uri") or report.get("model_uri") or "")
        if uri not in self.model_uris:
            self.model_uris.append(uri)
        model = self.model_uris.index(uri)
        self.reports += 1
        replica = str(report.get("replica") or "?")
        self.replicas[replica] = uri
        self.moments.add(replica, report.get("features"))
        requests = int(report.get("requests") or 0)
        self.requests += requests
        self.errors += int(report.get("errors") or 0)
        latency = report.get("latency_ms") or {}
        for name in _PERCENTILES:
            value = latency.get(name)
            if requests and isinstance(value, int | float) and math.isfinite(value):
                self.latency[name][0] += value * requests
                self.latency[name][1] += requests
        probe = report.get("probe_ms")
        if isinstance(probe, int | float) and math.isfinite(probe):
            self.probe_ms = max(self.probe_ms or 0.0, float(probe))
        if isinstance(report.get("objectives"), dict):
            self.objectives = dict(report["objectives"])
        labels = report.get("labels") or {}
        matched, correct = int(labels.get("matched") or 0), int(labels.get("correct") or 0)
        self.received += int(labels.get("received") or 0)
        self.matched += matched
        self.correct += correct
        counts = self.by_model.setdefault(uri, {"requests": 0, "matched": 0, "correct": 0})
        counts["requests"] += requests
        counts["matched"] += matched
        counts["correct"] += correct
        sample = report.get("sample") or {}
        rows = sample.get("rows") or []
        if rows:
            if not self.columns:
                self.columns = list(sample.get("columns") or [])
            self._keep(rows, model)

    def _keep(self, rows: list[list[float]], model: int) -> None:
        # Reservoir sampling: once full, the n-th row seen replaces a kept one
        # with probability capacity / n, so every row is kept with the same
        # chance, whichever replica reported first (truncating would favour it).
        for row in rows:
            self.rows_seen += 1
            if len(self.rows) < self.capacity:
                self.rows.append(row)
                self.row_models.append(model)
                continue
            slot = self.rng.randrange(self.rows_seen)
            if slot < self.capacity:
                self.rows[slot] = row
                self.row_models[slot] = model

    def observation(self) -> dict[str, Any]:
        """The closed window as the value of ``observation.tracker.serving``."""
        rows, row_models = self.rows, self.row_models
        latency = {
            name: (total / weight if weight else None)
            for name, (total, weight) in self.latency.items()
        }
        return {
            "workflow": self.workflow,
            "node": self.node,
            "window": {
                "start": self.start,
                "end": self.end,
                "seconds": self.seconds,
                "reports": self.reports,
            },
            "replicas": len(self.replicas),
            "replica_ids": sorted(self.replicas),
            "model_uris": list(self.model_uris),
            "requests": self.requests,
            "rps": self.requests / self.seconds,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "latency_ms": latency,  # approximate: see the module's docstring
            "probe_ms": self.probe_ms,
            "objectives": dict(self.objectives),
            "labels": {"received": self.received, "matched": self.matched, "correct": self.correct},
            "accuracy": self.correct / self.matched if self.matched else None,
            "by_model": {uri: dict(counts) for uri, counts in self.by_model.items()},
            "sample": {"columns": self.columns, "rows": rows, "model_index": row_models},
            # The replicas whose inputs differ most from the others' (see .deviations).
            "replica_deviations": self.moments.deviations(),
        }


class Windows:
    """The open window of each workflow node.

    Args:
        seconds: Window length.
        sample_rows: Most input rows in one window's sample.
        seed: Seed of the subsampling (a fixed one keeps tests reproducible).
    """

    def __init__(self, seconds: float, sample_rows: int, *, seed: int | None = None) -> None:
        self.seconds = seconds
        self.sample_rows = sample_rows
        self.open: dict[tuple[str, str], Window] = {}
        self._rng = random.Random(seed)

    def add(self, report: dict[str, Any], at: float) -> dict[str, Any] | None:
        """Add a report made at ``at`` (seconds since the epoch).

        Returns:
            The observation of the window this report closed, if it closed one.
        """
        workflow, node = str(report["workflow"]), str(report["node"])
        key = (workflow, node)
        window = self.open.get(key)
        closed = None
        if window is not None and at >= window.end:
            closed = window.observation()
            window = None
        if window is None:
            start = math.floor(at / self.seconds) * self.seconds
            window = self.open[key] = Window(
                workflow, node, start, self.seconds, capacity=self.sample_rows, rng=self._rng
            )
        window.add(report)
        return closed
