"""The tracker's section of the settings tree: ``settings.agents["tracker"]``.

Every field maps to an environment variable under ``SCANFLOW_AGENTS__TRACKER__``,
e.g. ``SCANFLOW_AGENTS__TRACKER__WINDOW_SECONDS=10`` or
``SCANFLOW_AGENTS__TRACKER__TRAINING_EXPERIMENTS=digits,fraud`` (lists as JSON or
comma-separated), and to ``settings.agents.tracker`` in a settings file or the
Helm values.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scanflow_agents.settings import Settings, list_from_text


class TrackerSettings(BaseModel):
    """How the tracker windows serving reports, what it keeps, and what it reads from MLflow."""

    model_config = ConfigDict(extra="forbid")

    window_seconds: float = Field(
        5.0, gt=0, description="Length of an aggregation window of serving reports, in seconds."
    )
    sample_rows: int = Field(
        1000,
        ge=0,
        description="Input rows kept per window (all replicas together) for drift tests.",
    )
    recent_rows: int = Field(
        5000, ge=1, description="Labelled rows kept per workflow node for the dataset actuator."
    )
    training_experiments: list[str] = Field(
        default_factory=lambda: ["digits"],
        min_length=1,
        description="MLflow experiments whose finished training runs are observed.",
    )
    training_poll_seconds: float = Field(
        15.0, gt=0, description="Seconds between two reads of new training runs."
    )
    serving_experiment: str = Field(
        "scanflow-serving",
        description="MLflow experiment where each closed serving window is logged (a run per "
        "workflow node, a step per window, at most a dozen metrics); empty: not logged.",
    )
    datasets_experiment: str = Field(
        "scanflow-datasets",
        min_length=1,
        description="MLflow experiment the dataset actuator writes its runs to.",
    )

    # The environment gives text: a JSON list, or items separated by commas.
    _names_from_text = field_validator("training_experiments", mode="before")(list_from_text)

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackerSettings:
        """Validate the tracker's section of ``settings`` (defaults where it is empty)."""
        return cls.model_validate(settings.agent_config("tracker"))
