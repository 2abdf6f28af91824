"""What one model-server replica counts: totals for Prometheus, windows for reports.

Totals only grow (Prometheus computes rates from them). Windows hold what
happened since the last serving report and are reset when one is taken, so a
tracker never sums the same request twice: the defect of the original, which
summed every run it had ever seen on each hourly poll.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from typing import Any

import numpy as np

# Seconds; the usual Prometheus ladder, tightened at the low end where a small
# model answers on loopback.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Latencies kept per window for percentiles; beyond it, the newest are dropped
# from the percentile sample (the counts stay exact).
_WINDOW_LATENCIES = 50_000
# Predictions kept to join labels that arrive later; the oldest go first.
_KEPT_PREDICTIONS = 100_000
# Input rows kept with their prediction so a label can be joined to its input:
# fewer than predictions, as rows are much larger.
_KEPT_INPUTS = 5_000
# Rows per window in the report's uniform input sample (for drift tests, which
# need values, not only means) and labelled rows (for retraining and evaluation).
SAMPLE_ROWS = 256
LABELLED_ROWS = 512
# Input rows gathered before their summaries are updated in one vectorised pass
# (and at each report): per request, numpy's fixed cost per call would be paid
# once per feature and row.
BATCH_ROWS = 256
# Distinct predicted values reported one by one; more means a regression.
_MAX_CLASSES = 50


class _Window:
    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.errors = 0
        self.rows = 0
        self.latencies: list[float] = []
        self.features: dict[str, list[float]] = {}  # name -> [n, sum, sumsq, min, max]
        self.classes: Counter[str] = Counter()
        self.numeric = [0.0, 0.0, 0.0]  # n, sum, sumsq of numeric predictions
        self.labels = 0
        self.matched = 0
        self.correct = 0
        self.sample: list[list[float]] = []  # a uniform reservoir sample of input rows
        self.labelled: list[tuple[list[float], Any, Any]] = []  # (row, label, prediction)
        self.seen_rows = 0
        # Input rows not yet folded into ``features`` and ``sample``, all with the
        # columns ``pending_columns``.
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.pending_columns: list[str] = []


class ServingStats:
    """Counters of one replica; not thread-safe, used from the event loop only."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.predictions_total = 0
        self.errors_total = 0
        self.labels_total = 0
        self.labels_matched_total = 0
        self.window = _Window()
        self.columns: list[str] = []
        self._kept: OrderedDict[str, Any] = OrderedDict()
        # A row is kept as its request's matrix and its index there: a list of
        # floats is built only for the few rows a label arrives for.
        self._inputs: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._random = np.random.default_rng()

    def record_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one request to ``endpoint`` that ended with HTTP ``status``."""
        self.requests[(endpoint, status)] += 1
        if endpoint != "/predict":
            return
        self.buckets[_bucket(seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1
        self.window.requests += 1
        if len(self.window.latencies) < _WINDOW_LATENCIES:
            self.window.latencies.append(seconds)
        if status >= 500:
            self.errors_total += 1
            self.window.errors += 1

    def record_predictions(
        self, ids: list[str], columns: list[str], rows: np.ndarray, predictions: list[Any]
    ) -> None:
        """Remember predictions for labels and add their inputs to the window.

        The inputs are only queued here: their summaries are computed for many
        rows at once (see :data:`BATCH_ROWS`), since one request's row costs a
        numpy reduction per feature otherwise, more than a small model's predict.

        Args:
            ids: One prediction id per row.
            columns: The names of the numeric input features, one per column of ``rows``.
            rows: The numeric inputs, one row per prediction (shape rows x columns).
            predictions: One JSON-ready prediction per row.
        """
        window = self.window
        self.predictions_total += len(ids)
        window.rows += len(ids)
        for pid, value in zip(ids, predictions, strict=True):
            self._kept[pid] = value
            if isinstance(value, float) and not value.is_integer():
                window.numeric[0] += 1
                window.numeric[1] += value
                window.numeric[2] += value * value
            else:
                window.classes[str(value)] += 1
        while len(self._kept) > _KEPT_PREDICTIONS:
            self._kept.popitem(last=False)
        if not columns or not len(rows):
            return
        if columns != window.pending_columns:
            self._fold()
            window.pending_columns = columns
        self.columns = columns
        window.pending.append(rows)
        window.pending_rows += len(rows)
        for index, pid in enumerate(ids):
            self._inputs[pid] = (rows, index)
        while len(self._inputs) > _KEPT_INPUTS:
            self._inputs.popitem(last=False)
        if window.pending_rows >= BATCH_ROWS:
            self._fold()

    def _fold(self) -> None:
        """Add the queued rows to the window's feature summaries and input sample."""
        window = self.window
        if not window.pending:
            return
        matrix = np.concatenate(window.pending) if len(window.pending) > 1 else window.pending[0]
        window.pending, window.pending_rows = [], 0
        count = float(len(matrix))
        sums, squares = matrix.sum(axis=0), np.square(matrix).sum(axis=0)
        lows, highs = matrix.min(axis=0), matrix.max(axis=0)
        for i, name in enumerate(window.pending_columns):
            acc = window.features.setdefault(name, [0.0, 0.0, 0.0, math.inf, -math.inf])
            acc[0] += count
            acc[1] += float(sums[i])
            acc[2] += float(squares[i])
            acc[3] = min(acc[3], float(lows[i]))
            acc[4] = max(acc[4], float(highs[i]))
        self._sample(matrix)

    def _sample(self, matrix: np.ndarray) -> None:
        # Reservoir sampling (Algorithm R) over the batch in arrival order, with all
        # its random draws at once: every row of the window is equally likely.
        window = self.window
        free = max(0, min(SAMPLE_ROWS - len(window.sample), len(matrix)))
        window.sample.extend(matrix[:free].tolist())
        seen = window.seen_rows + free
        rest = len(matrix) - free
        if rest:
            # Row j of the rest is the (seen + j + 1)-th of the window: a slot in [0, that).
            slots = self._random.integers(0, np.arange(seen + 1, seen + rest + 1))
            for j in np.flatnonzero(slots < SAMPLE_ROWS):
                window.sample[slots[j]] = matrix[free + j].tolist()
        window.seen_rows = seen + rest

    def record_labels(self, labels: list[tuple[str, Any]]) -> tuple[int, list[str]]:
        """Join ground truth to earlier predictions by prediction id.

        Returns:
            How many labels matched a kept prediction, and the unknown ids.
        """
        unknown: list[str] = []
        for pid, label in labels:
            self.labels_total += 1
            self.window.labels += 1
            if pid not in self._kept:
                unknown.append(pid)
                continue
            self.labels_matched_total += 1
            self.window.matched += 1
            prediction = self._kept.pop(pid)
            if _same(prediction, label):
                self.window.correct += 1
            kept = self._inputs.pop(pid, None)
            if kept is not None and len(self.window.labelled) < LABELLED_ROWS:
                rows, index = kept
                self.window.labelled.append((rows[index].tolist(), label, prediction))
        return len(labels) - len(unknown), unknown

    def take_window(self) -> dict[str, Any]:
        """Summarise the current window as a report payload and start a new one."""
        self._fold()
        window, self.window = self.window, _Window()
        now = time.time()
        lat = np.asarray(window.latencies) * 1000.0
        pct = np.percentile(lat, [50, 95, 99]).tolist() if lat.size else [None] * 3
        return {
            "window": {"start": window.started, "end": now, "seconds": now - window.started},
            "requests": window.requests,
            "errors": window.errors,
            "error_rate": window.errors / window.requests if window.requests else 0.0,
            "rows": window.rows,
            "latency_ms": {
                "p50": pct[0],
                "p95": pct[1],
                "p99": pct[2],
                "mean": float(lat.mean()) if lat.size else None,
                "max": float(lat.max()) if lat.size else None,
            },
            "features": {name: _summary(acc) for name, acc in window.features.items()},
            "predictions": _predictions(window),
            "labels": {
                "received": window.labels,
                "matched": window.matched,
                "correct": window.correct,
                "accuracy": window.correct / window.matched if window.matched else None,
            },
            "sample": {"columns": self.columns, "rows": window.sample},
            "labelled": {
                "columns": self.columns,
                "rows": [row for row, _, _ in window.labelled],
                "labels": [label for _, label, _ in window.labelled],
                "predictions": [prediction for _, _, prediction in window.labelled],
            },
        }


def _bucket(seconds: float) -> int:
    for i, bound in enumerate(LATENCY_BUCKETS):
        if seconds <= bound:
            return i
    return len(LATENCY_BUCKETS)


def _summary(acc: list[float]) -> dict[str, float]:
    n, total, squares, low, high = acc
    mean = total / n
    return {
        "count": n,
        "mean": mean,
        "std": math.sqrt(max(squares / n - mean * mean, 0.0)),
        "min": low,
        "max": high,
    }


def _predictions(window: _Window) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if window.classes:
        top = dict(window.classes.most_common(_MAX_CLASSES))
        result["classes"] = top
        result["other_classes"] = sum(window.classes.values()) - sum(top.values())
    n, total, squares = window.numeric
    if n:
        mean = total / n
        result["numeric"] = {
            "count": n,
            "mean": mean,
            "std": math.sqrt(max(squares / n - mean * mean, 0.0)),
        }
    return result


def _same(prediction: Any, label: Any) -> bool:
    # Labels come back through JSON from another system: 3, 3.0 and "3" are the
    # same class.
    if prediction == label:
        return True
    try:
        return float(prediction) == float(label)
    except (TypeError, ValueError):
        return str(prediction) == str(label)
