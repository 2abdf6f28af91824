"""Settings of the local platform (processes on this machine)."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, Field

from scanflow_agents.settings import Settings


class LocalPlatformSettings(BaseModel):
    """Where the local platform keeps its files and what it tells its processes."""

    base_dir: Path = Field(default=Path(".scanflow/local"), description="Run dirs, logs and venvs.")
    host: str = Field(default="127.0.0.1", description="Address services listen on.")
    python: str = Field(
        default=sys.executable, description="Interpreter for nodes without requirements."
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI given to nodes."
    )
    registry_uri: str | None = None
    nats_url: str | None = Field(default=None, description="Where model servers publish reports.")
    namespace: str = "default"
    replica_reports: bool = Field(
        default=False,
        description="Each model-server replica also logs every number of its reports to MLflow "
        "(about 350 metrics a report); off: the tracker logs each window's figures per node.",
    )
    report_interval: float = Field(
        default=10.0, gt=0, description="Seconds between serving reports."
    )
    start_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a replica may take to be ready."
    )
    stop_timeout: float = Field(default=10.0, gt=0, description="Seconds a process gets to stop.")
    standby_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas per service kept started and loaded outside the rotation: "
        "a scale-out activates them at once instead of starting processes.",
    )
    kept_runs: int = Field(default=100, ge=1, description="Finished runs remembered for status.")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> LocalPlatformSettings:
        """Take MLflow, NATS and namespace from the agent settings tree."""
        values: dict[str, object] = {
            "tracking_uri": settings.mlflow.tracking_uri,
            "registry_uri": settings.mlflow.registry_uri,
            "nats_url": settings.nats.url,
            "namespace": settings.namespace,
        }
        values.update(overrides)
        return cls.model_validate(values)
