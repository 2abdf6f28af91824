"""The checker's section of the settings tree: ``settings.agents["checker"]``.

Every field maps to an environment variable under ``SCANFLOW_AGENTS__CHECKER__``,
e.g. ``SCANFLOW_AGENTS__CHECKER__ALPHA=0.01``, or for the objectives of one workflow
``SCANFLOW_AGENTS__CHECKER__SLO='{"serve": {"latency_p95_ms": 50, "error_rate": 0.01}}'``,
and to ``settings.agents.checker`` in a settings file or the Helm values.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scanflow_agents.settings import Settings


class Objectives(BaseModel):
    """The service-level objectives of one online workflow; unset ones take the defaults."""

    model_config = ConfigDict(extra="forbid")

    latency_p95_ms: float | None = Field(None, gt=0, description="Most p95 latency, in ms.")
    error_rate: float | None = Field(None, ge=0, le=1, description="Most share of failed requests.")


class CheckerSettings(BaseModel):
    """What the checker tests, against what, and how sure it must be before it speaks."""

    model_config = ConfigDict(extra="forbid")

    # Input drift.
    reference: Literal["model", "windows"] = Field(
        "model",
        description=(
            "Where a served model's reference inputs come from: 'model', the reference "
            "artifact of the training run of the model version (the first windows when "
            "it has none), or 'windows', always the first windows served."
        ),
    )
    reference_artifact: str = Field(
        "reference.npz", min_length=1, description="Artifact of a training run (array 'x')."
    )
    reference_windows: int = Field(
        3, ge=1, description="Windows of samples that make a reference built from serving."
    )
    alpha: float = Field(0.01, gt=0, lt=1, description="Level of the corrected drift tests.")
    correction: Literal["holm", "bh", "none"] = Field(
        "holm", description="Multiple-testing correction over the features of one window."
    )
    min_features: int = Field(
        1, ge=1, description="Significant features a window needs to count as drifted."
    )
    consecutive: int = Field(
        2, ge=1, description="Drifted windows in a row before a drift finding."
    )
    min_psi: float = Field(
        0.1,
        ge=0,
        description=(
            "PSI a significant feature must also reach: large windows make KS significant "
            "for shifts too small to matter (0: the test alone decides)."
        ),
    )
    min_rows: int = Field(
        30, ge=2, description="Sampled rows of one model a window needs to be tested."
    )
    # Performance drift.
    adwin_delta: float = Field(
        0.002, gt=0, lt=1, description="ADWIN's confidence on the stream of labelled errors."
    )
    # Service-level objectives.
    slo: dict[str, Objectives] = Field(
        default_factory=dict, description="Objectives per workflow name."
    )
    default_latency_p95_ms: float = Field(
        100.0, gt=0, description="p95 latency objective of workflows not in 'slo'."
    )
    default_error_rate: float = Field(
        0.01, ge=0, le=1, description="Error-rate objective of workflows not in 'slo'."
    )
    slo_min_requests: int = Field(
        1, ge=1, description="Requests a window needs before it can breach an objective."
    )

    @field_validator("slo", mode="before")
    @classmethod
    def _objectives_from_text(cls, value: Any) -> Any:
        # The environment gives text: a JSON object.
        return json.loads(value) if isinstance(value, str) else value

    def objectives(self, workflow: str) -> tuple[float, float]:
        """The p95 latency (ms) and error-rate objectives of ``workflow``."""
        own = self.slo.get(workflow) or Objectives()
        latency = own.latency_p95_ms or self.default_latency_p95_ms
        errors = own.error_rate if own.error_rate is not None else self.default_error_rate
        return latency, errors

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckerSettings:
        """Validate the checker's section of ``settings`` (defaults where it is empty)."""
        return cls.model_validate(settings.agent_config("checker"))
