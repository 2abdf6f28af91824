"""The reference inputs each served model is tested against.

A served model URI gets one :class:`Baseline`, made the first time the checker
sees it:

- from the model version's training run (``reference: model``): the URI is
  resolved to a registered version (``models:/<name>@<alias>``,
  ``models:/<name>/<version>``) or a run (``runs:/<run_id>/...``), and the
  run's ``reference.npz`` (array ``x``, a sample of the training inputs, which
  the training step logs) becomes the reference. After a redeploy the new
  training data is the reference, not what the old model saw;
- from the first ``reference_windows`` windows of samples of that URI, when the
  run has no such artifact, or always with ``reference: windows``. No window is
  tested while the reference is being collected.

The tracker names a served model by the registered version its replicas
loaded (model servers resolve an alias when they load), so an alias moved and
replicas restarted on it arrive as a new version URI with a baseline of its
own. An alias URI that still arrives (from a server that reports none) is
resolved once, when it is first seen.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scanflow_agents.drift import Reference
from scanflow_agents.knowledge import (
    KnowledgeClient,
    ModelRef,
    ModelRegistry,
    ModelVersionRecord,
)

logger = logging.getLogger("scanflow_agents.builtin.checker")

_RUN = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z]+)(/.*)?$")


class NoReference(LookupError):
    """A model's training run has no usable reference; the message says why."""


@dataclass
class Baseline:
    """The reference of one served model URI, or the windows collected to make one."""

    uri: str
    source: str
    reference: Reference | None = None
    needed: int = 0
    collected: list[np.ndarray] = field(default_factory=list)

    def collect(self, rows: np.ndarray, columns: list[str]) -> bool:
        """Add one window's rows; build the reference once enough windows are in (blocking)."""
        self.collected.append(rows)
        if len(self.collected) < self.needed:
            return False
        data = np.concatenate(self.collected)
        self.reference = Reference(data, _names(columns, data.shape[1]))
        self.collected = []
        return True

    def describe(self) -> dict[str, Any]:
        """What the reference is, for a finding's evidence."""
        size = self.reference.size if self.reference is not None else None
        return {"source": self.source, "rows": size}


async def from_model(
    client: KnowledgeClient, uri: str, artifact: str, columns: list[str]
) -> Baseline:
    """The baseline of ``uri`` from its training run's reference artifact.

    Raises:
        NoReference: The URI names no run, or the run has no readable artifact.
        KnowledgeUnavailable: MLflow cannot be reached (try again later).
    """
    run_id, what = await _run_of(client, uri)
    data = await asyncio.to_thread(_download, client.tracking_uri, run_id, artifact)
    if data.ndim != 2 or data.shape[0] == 0:
        raise NoReference(f"{artifact} of run {run_id} holds no 2-D array 'x' ({data.shape})")
    if columns and data.shape[1] != len(columns):
        raise NoReference(
            f"{artifact} of run {run_id} has {data.shape[1]} columns, the served inputs "
            f"{len(columns)}"
        )
    names = _names(columns, data.shape[1])
    reference = await asyncio.to_thread(Reference, data, names)
    return Baseline(uri, f"{what}: {artifact} of run {run_id}", reference)


def from_windows(uri: str, windows: int, why: str = "") -> Baseline:
    """A baseline that the first ``windows`` windows of ``uri`` will make."""
    source = f"the first {windows} window(s) served by {uri}" + (f" ({why})" if why else "")
    return Baseline(uri, source, needed=windows)


async def _run_of(client: KnowledgeClient, uri: str) -> tuple[str, str]:
    if match := _RUN.match(uri):
        return match["run"], "run"
    version: ModelVersionRecord | None
    ref = ModelRef.parse(uri)
    if ref is None:
        raise NoReference(f"{uri!r} names no registered model version or run")
    if ref.alias:
        version = await ModelRegistry(client).version_by_alias(ref.name, ref.alias)
    else:
        version = await _version(client, ref.name, str(ref.version))
    if version is None:
        raise NoReference(f"{uri!r} resolves to no registered model version")
    if not version.run_id:
        raise NoReference(f"version {version.version} of {version.name!r} has no training run")
    return version.run_id, f"model {version.name!r} version {version.version}"


async def _version(client: KnowledgeClient, name: str, version: str) -> ModelVersionRecord | None:
    def get(store: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return store.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    found = await client.registry(f"reading version {version} of model '{name}'", get)
    return ModelVersionRecord.from_version(found) if found is not None else None


def _download(tracking_uri: str, run_id: str, artifact: str) -> np.ndarray:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="scanflow-reference-") as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"runs:/{run_id}/{artifact}",
                tracking_uri=tracking_uri,
                dst_path=folder,
            )
            with np.load(Path(path)) as archive:
                return np.asarray(archive["x"], dtype=np.float64)
        except (MlflowException, OSError, KeyError, ValueError) as exc:
            raise NoReference(f"run {run_id} has no readable {artifact}: {exc}") from exc


def _names(columns: list[str], width: int) -> list[str]:
    if len(columns) == width and len(set(columns)) == width:
        return [str(c) for c in columns]
    return [f"x{i}" for i in range(width)]
