"""The checker's section of the settings tree: ``settings.agents["checker"]``.

Every field maps to an environment variable under ``SCANFLOW_AGENTS__CHECKER__``,
e.g. ``SCANFLOW_AGENTS__CHECKER__ALPHA=0.01``, or to override the objectives of one
workflow ``SCANFLOW_AGENTS__CHECKER__SLO='{"serve": {"latency_p95_ms": 50}}'``,
and to ``settings.agents.checker`` in a settings file or the Helm values. A
service's own objective is its ``latency_p95_ms`` in the application.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scanflow_agents.settings import Settings


class Objectives(BaseModel):
    """Objectives of one online workflow that override the service's own; unset ones don't."""

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
        default_factory=dict,
        description=(
            "Objectives per workflow name that override the service's own (its "
            "latency_p95_ms in the application, which its replicas report)."
        ),
    )
    default_latency_p95_ms: float = Field(
        100.0,
        gt=0,
        description="p95 latency objective of services that declare none and are not in 'slo'.",
    )
    default_error_rate: float = Field(
        0.01, ge=0, le=1, description="Error-rate objective of workflows not in 'slo'."
    )
    slo_min_requests: int = Field(
        50,
        ge=1,
        description=(
            "Requests a window needs before it can breach an objective: the p95 of a "
            "handful of requests is no evidence, and a breach makes a scale-out."
        ),
    )

    @field_validator("slo", mode="before")
    @classmethod
    def _objectives_from_text(cls, value: Any) -> Any:
        # The environment gives text: a JSON object.
        return json.loads(value) if isinstance(value, str) else value

    def objectives(
        self, workflow: str, declared: Mapping[str, Any] | None = None
    ) -> tuple[float, float]:
        """The p95 latency (ms) and error-rate objectives of ``workflow``.

        Args:
            workflow: The online workflow.
            declared: The service's own objectives (``latency_p95_ms``, ``error_rate``,
                from its definition in the application, as its replicas report them).

        Returns:
            For each objective, the first set of: this section's ``slo.<workflow>``,
            the service's own, the default.
        """
        override = self.slo.get(workflow) or Objectives()
        own = Objectives.model_validate(
            {k: v for k, v in (declared or {}).items() if k in Objectives.model_fields}
        )
        latency = override.latency_p95_ms or own.latency_p95_ms or self.default_latency_p95_ms
        errors = next(
            (v for v in (override.error_rate, own.error_rate) if v is not None),
            self.default_error_rate,
        )
        return latency, errors

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckerSettings:
        """Validate the checker's section of ``settings`` (defaults where it is empty)."""
        return cls.model_validate(settings.agent_config("checker"))
