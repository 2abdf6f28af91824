"""The planner's own section of the settings tree: ``settings.agents["planner"]``.

Every field maps to an environment variable under ``SCANFLOW_AGENTS__PLANNER__``,
e.g. ``SCANFLOW_AGENTS__PLANNER__PLATFORM=local`` or
``SCANFLOW_AGENTS__PLANNER__LOCAL__BASE_DIR=/var/lib/scanflow`` (lists as JSON or
comma-separated: ``SCANFLOW_AGENTS__PLANNER__APPLICATIONS=a.yaml,b.yaml``), and to
``settings.agents.planner`` in a settings file or the Helm values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scanflow_agents.settings import Settings, list_from_text


class LocalOptions(BaseModel):
    """How the planner runs workflows on the local platform (processes on its machine)."""

    model_config = ConfigDict(extra="forbid")

    base_dir: Path = Field(
        Path(".scanflow/local"), description="Where run folders, logs and venvs go."
    )
    host: str = Field("127.0.0.1", description="Address the services listen on.")
    report_interval: float = Field(
        10.0, gt=0, description="Seconds between the model servers' reports."
    )
    start_timeout: float = Field(60.0, gt=0, description="Seconds a replica may take to be ready.")
    stop_timeout: float = Field(10.0, gt=0, description="Seconds a process gets to stop.")
    standby_replicas: int = Field(
        0,
        ge=0,
        description="Replicas per service kept loaded outside the rotation for a fast scale-out.",
    )


class PlannerSettings(BaseModel):
    """What the planner executes plans on, and what it knows at start."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["local", "kubernetes"] = Field(
        "local", description="Where workflows run: 'local' processes or 'kubernetes'."
    )
    team: str = Field(
        "default",
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="The team of applications that do not name one (their MLflow experiment).",
    )
    applications: list[Path] = Field(
        default_factory=list, description="Application YAML files to register at start."
    )
    local: LocalOptions = Field(default_factory=LocalOptions)
    kubernetes: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the Kubernetes platform (namespace, images...), passed on as is.",
    )
    store: bool = Field(
        True, description="Keep applied applications in MLflow's application store."
    )

    # The environment gives text: a JSON list, or items separated by commas.
    _paths_from_text = field_validator("applications", mode="before")(list_from_text)

    @classmethod
    def from_settings(cls, settings: Settings) -> PlannerSettings:
        """Validate the planner's section of ``settings`` (defaults where it is empty)."""
        return cls.model_validate(settings.agent_config("planner"))
