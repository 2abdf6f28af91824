"""Recent labelled rows per workflow node, and writing them as a dataset in MLflow.

Model servers join labels to the inputs they predicted on and send those rows
in their reports (``labelled``). The tracker keeps the newest ``recent_rows``
of each workflow node with the model that predicted them, so retraining gets
ground truth, never the model's own predictions as labels (a defect of the
original).
"""

from __future__ import annotations

import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LabelledRow:
    """One input row with its true label and the model that predicted it."""

    x: list[float]
    label: Any
    prediction: Any
    model_uri: str
    time: float = 0.0  # the end of the serving window that carried it (Unix seconds)
    version_uri: str | None = None  # the registered version behind model_uri, when known

    @property
    def served(self) -> str:
        """The model that predicted it, as the tracker's windows name it."""
        return self.version_uri or self.model_uri


class RecentRows:
    """The newest labelled rows of each workflow node (a bounded deque each).

    Args:
        limit: Rows kept per workflow node; the oldest go first.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[tuple[str, str], deque[LabelledRow]] = {}

    def add(self, report: dict[str, Any]) -> int:
        """Keep the labelled rows of one serving report; returns how many it had."""
        labelled = report.get("labelled") or {}
        rows = labelled.get("rows") or []
        if not rows:
            return 0
        labels = labelled.get("labels") or []
        predictions = labelled.get("predictions") or [None] * len(rows)
        uri = str(report.get("model_uri") or "")
        version = report.get("model_version_uri") or None
        key = (str(report["workflow"]), str(report["node"]))
        kept = self.rows.setdefault(key, deque(maxlen=self.limit))
        when = float((report.get("window") or {}).get("end") or 0.0)
        for x, label, prediction in zip(rows, labels, predictions, strict=False):
            kept.append(LabelledRow(list(x), label, prediction, uri, when, version))
        return len(rows)

    def select(
        self,
        workflow: str,
        node: str,
        limit: int,
        since_model: str | None = None,
        since: float | None = None,
    ) -> list[LabelledRow]:
        """The newest ``limit`` rows of a node, from the first one ``since_model`` predicted on,
        and labelled in windows that ended at ``since`` (Unix seconds) or later.

        Raises:
            LookupError: No rows for the node, or none predicted by ``since_model``;
                the message says what is known.
        """
        kept = list(self.rows.get((workflow, node), ()))
        if not kept:
            known = ", ".join(f"{w}/{n}" for w, n in sorted(self.rows)) or "none yet"
            raise LookupError(
                f"the tracker has no labelled rows of {workflow}/{node} "
                f"(nodes with labelled rows: {known})"
            )
        if since_model is not None:
            # Either name of the model: as deployed (an alias) or the version it resolved to.
            names = [(row.model_uri, row.version_uri) for row in kept]
            first = next((i for i, both in enumerate(names) if since_model in both), None)
            if first is None:
                models = ", ".join(sorted({row.served for row in kept}))
                raise LookupError(
                    f"no labelled row of {workflow}/{node} was predicted by {since_model!r} "
                    f"(models in the kept rows: {models})"
                )
            kept = kept[first:]
        if since is not None:
            kept = [row for row in kept if row.time >= since]
            if not kept:
                raise LookupError(f"no labelled row of {workflow}/{node} since {since:.3f}")
        return kept[-limit:]


def labels_array(labels: list[Any]) -> np.ndarray:
    """Labels as integers when every one is integral (3, 3.0, "3"), else as strings."""
    try:
        numbers = np.asarray([float(label) for label in labels], dtype=float)
    except (TypeError, ValueError):
        return np.asarray([str(label) for label in labels])
    if np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)):
        return numbers.astype(np.int64)
    return np.asarray([str(label) for label in labels])


def write_npz(rows: list[LabelledRow], folder: str | Path) -> Path:
    """Write ``recent.npz`` (``x`` float rows, ``y`` labels) into ``folder``."""
    path = Path(folder) / "recent.npz"
    x = np.asarray([row.x for row in rows], dtype=float)
    y = labels_array([row.label for row in rows])
    np.savez_compressed(path, x=x, y=y)
    return path


def upload(rows: list[LabelledRow], run_id: str, tracking_uri: str) -> None:
    """Write the rows as ``recent.npz`` and log it as an artifact of ``run_id`` (blocking)."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="scanflow-dataset-") as folder:
        path = write_npz(rows, folder)
        MlflowClient(tracking_uri=tracking_uri).log_artifact(run_id, str(path))
