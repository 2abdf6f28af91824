"""The improver's section of the settings tree: ``settings.agents["improver"]``.

Every field maps to an environment variable under ``SCANFLOW_AGENTS__IMPROVER__``,
e.g. ``SCANFLOW_AGENTS__IMPROVER__MARGIN=0.02`` or
``SCANFLOW_AGENTS__IMPROVER__SCALING__MAX_REPLICAS=6``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scanflow_agents.settings import Settings

PlanKind = Literal["retrain", "promote", "rollback", "scale"]


class Supervised(BaseModel):
    """One served workflow, and how it is retrained."""

    model_config = ConfigDict(extra="forbid")

    node: str = Field("model", description="The service node that serves the model.")
    model: str = Field("digits", description="The registered model it serves.")
    train_workflow: str = Field("train", description="The batch workflow that retrains it.")
    train_node: str = Field("train", description="The training step (takes --recent).")
    experiment: str = Field("digits", description="The MLflow experiment training runs log to.")
    train_parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra parameters of the training step on a retraining (e.g. its model's C).",
    )


class Scaling(BaseModel):
    """Replica planning from demand: one step to the computed target, with guards."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0, description="Fewest replicas a plan may leave.")
    max_replicas: int = Field(4, ge=1, description="Most replicas a plan may ask for.")
    capacity_rps: float = Field(
        40.0, gt=0, description="Requests/s one replica serves within the objective (first guess)."
    )
    headroom: float = Field(
        0.2, ge=0, description="Spare capacity planned above demand (also the scale-in hysteresis)."
    )
    scale_out_cooldown: float = Field(5.0, ge=0, description="Seconds between two scale-outs.")
    scale_in_cooldown: float = Field(
        20.0, ge=0, description="Seconds after any scaling before scaling in."
    )
    scale_in_windows: int = Field(
        3,
        ge=1,
        description="Calm windows in a row (no breach, demand fits fewer) before scaling in.",
    )
    learn: bool = Field(
        True,
        description=(
            "Lower the capacity estimate when a breach shows it was too optimistic, and "
            "raise it again after healthy windows (never above capacity_rps)."
        ),
    )
    recover_windows: int = Field(
        3,
        ge=1,
        description=(
            "Healthy windows in a row after which a lowered capacity estimate moves "
            "halfway back to capacity_rps."
        ),
    )


class ImproverSettings(BaseModel):
    """What the improver plans, and its guards."""

    model_config = ConfigDict(extra="forbid")

    workflows: dict[str, Supervised] = Field(
        default_factory=lambda: {"serve": Supervised()},
        description="Served workflows by name, with their model and training workflow.",
    )
    margin: float = Field(
        0.02, ge=0, description="How much a candidate must beat production on recent data."
    )
    retrain_cooldown: float = Field(
        60.0, ge=0, description="Seconds after a retraining ends before another may start."
    )
    dataset_rows: int = Field(5000, gt=0, description="Recent labelled rows asked of the tracker.")
    min_dataset_rows: int = Field(
        200, gt=0, description="Labelled rows since the drift to gather before retraining."
    )
    max_data_wait: float = Field(
        60.0, ge=0, description="Seconds to wait for them; then train on what there is."
    )
    retrain_timeout: float = Field(
        1800.0,
        gt=0,
        description=(
            "Seconds a retraining run may take; past it the improver stops waiting "
            "(a decision 'retrain-timed-out') and a new finding may start another."
        ),
    )
    rollback_windows: int = Field(
        3, ge=1, description="Labelled windows after a promotion that judge it."
    )
    rollback_margin: float = Field(
        0.1,
        ge=0,
        description=(
            "Without the replaced version's score on the recent data: accuracy below the "
            "candidate's evaluation by this much triggers a rollback."
        ),
    )
    rollback_min_labels: int = Field(20, ge=1, description="Labels a window needs to count.")
    approval: list[PlanKind] = Field(
        default_factory=list, description="Plan kinds that wait for a human's approve/reject."
    )
    approval_timeout: float = Field(600.0, gt=0, description="Seconds a plan waits for approval.")
    on_timeout: Literal["reject", "approve", "hold"] = Field(
        "reject",
        description=(
            "What happens to a plan nobody decided within approval_timeout: rejected, "
            "approved, or held for a person (the expiry is recorded either way)."
        ),
    )
    scaling: Scaling = Field(default_factory=Scaling)

    @classmethod
    def of(cls, settings: Settings, name: str = "improver") -> ImproverSettings:
        return cls.model_validate(settings.agent_config(name))
