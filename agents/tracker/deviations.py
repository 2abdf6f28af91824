"""Replicas whose inputs differ from their siblings': drift in a few replicas of a fleet.

Drift in 5 % of a thousand replicas barely moves the pooled sample a window
tests against the reference (a tenth of its rows at best), so the checker's
reference test does not see it. What does see it is each replica against the
others: every report carries per-feature counts, means and deviations
(``features``), and replicas behind one load balancer see one distribution,
so a replica whose mean of a feature sits many standard errors from the
fleet's is served something else (a region, a client, a broken feature
pipeline). No reference is needed, and the cost is a sum per replica and
feature, folded as reports arrive.

The statistic, per replica r and feature f over a window:
``z = (mean_rf - mean_f) / (sd_f / sqrt(n_r))``, where ``mean_f`` and ``sd_f``
are the fleet's (every replica's rows together) and ``n_r`` the replica's rows.
The window's observation says how many replicas and features were judged
(what a multiple-testing correction needs) and lists the replicas with the
largest ``|z|`` (at most :data:`LISTED`), each with its features beyond
:data:`SHOWN_Z`; the checker decides what is significant.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Replicas with fewer rows in a window are not judged (the normal approximation
# of a mean needs a few dozen values).
MIN_ROWS = 30
LISTED = 20  # replicas listed per window, the most deviant first
SHOWN_Z = 3.0  # features shown per listed replica: beyond this |z|
_SHOWN_FEATURES = 10


class ReplicaMoments:
    """Per replica and feature: rows, sum and sum of squares, from the reports' summaries."""

    def __init__(self) -> None:
        self.features: list[str] = []
        self._index: dict[str, int] = {}
        self.by_replica: dict[str, np.ndarray] = {}  # replica -> (3, features)

    def add(self, replica: str, summaries: Any) -> None:
        """Fold one report's ``features`` (``{name: {count, mean, std}}``) into the replica's."""
        if not isinstance(summaries, dict):
            return
        for name, summary in summaries.items():
            if not isinstance(summary, dict):
                continue
            values = [summary.get(key) for key in ("count", "mean", "std")]
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                continue
            n, mean, std = (float(v) for v in values)  # type: ignore[arg-type]
            column = self._column(str(name))
            moments = self.by_replica.get(replica)
            if moments is None or moments.shape[1] < len(self.features):
                moments = self._widened(replica)
            moments[0, column] += n
            moments[1, column] += n * mean
            moments[2, column] += n * (std**2 + mean**2)

    def _column(self, name: str) -> int:
        column = self._index.get(name)
        if column is None:
            column = self._index[name] = len(self.features)
            self.features.append(name)
        return column

    def _widened(self, replica: str) -> np.ndarray:
        old = self.by_replica.get(replica)
        moments = np.zeros((3, len(self.features)))
        if old is not None:
            moments[:, : old.shape[1]] = old
        self.by_replica[replica] = moments
        return moments

    def deviations(self) -> dict[str, Any]:
        """The replicas furthest from the fleet: ``{replicas, features, listed}``."""
        replicas = [r for r, m in self.by_replica.items() if m[0].max(initial=0) >= MIN_ROWS]
        judged = {"replicas": len(replicas), "features": len(self.features), "listed": []}
        if len(replicas) < 2 or not self.features:
            return judged
        width = len(self.features)
        moments = np.stack([_padded(self.by_replica[r], width) for r in replicas])  # (R, 3, F)
        n, sums, squares = moments[:, 0], moments[:, 1], moments[:, 2]
        total = n.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = sums.sum(axis=0) / total
            sd = np.sqrt(np.maximum(squares.sum(axis=0) / total - mean**2, 0.0))
            z = (sums / n - mean) / (sd / np.sqrt(n))
        # A feature constant across the fleet, or one a replica never saw, says nothing.
        z = np.where(np.isfinite(z) & (sd > 0) & (n >= MIN_ROWS), z, 0.0)
        worst = np.abs(z).max(axis=1)
        listed = []
        for index in np.argsort(-worst)[:LISTED]:
            if worst[index] < SHOWN_Z:
                break
            row = z[index]
            shown = np.argsort(-np.abs(row))[:_SHOWN_FEATURES]
            listed.append(
                {
                    "replica": replicas[index],
                    "rows": int(n[index].max()),
                    "z": {
                        self.features[f]: round(float(row[f]), 2)
                        for f in shown
                        if abs(row[f]) >= SHOWN_Z
                    },
                }
            )
        return {**judged, "listed": listed}


def _padded(moments: np.ndarray, width: int) -> np.ndarray:
    if moments.shape[1] == width:
        return moments
    padded = np.zeros((3, width))
    padded[:, : moments.shape[1]] = moments
    return padded
