"""What a drift check found, per feature and overall, as plain JSON-ready values.

A report is the evidence of a finding: it travels in events and into MLflow, so
it holds only str, int, float, bool and lists/dicts of them, and it round-trips
through ``to_dict`` / ``from_dict`` (and so through ``json``) unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["numeric", "categorical"]
Test = Literal["ks", "chi2"]


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison of the window with the reference.

    Attributes:
        name: The feature.
        kind: ``numeric`` (tested with two-sample KS) or ``categorical`` (chi-squared).
        test: ``ks`` or ``chi2``.
        statistic: KS distance D in [0, 1], or the chi-squared statistic.
        p_value: The test's p-value before correction.
        p_adjusted: The p-value after the report's correction for many features.
        psi: Population Stability Index against the reference bins or categories.
        drifted: ``p_adjusted < alpha`` and ``psi >= min_psi``.
        count: Window values used (missing values are left out).
        unseen: Categories of the window that the reference never had (categorical).
    """

    name: str
    kind: Kind
    test: Test
    statistic: float
    p_value: float
    p_adjusted: float
    psi: float
    drifted: bool
    count: int
    unseen: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The feature's result as JSON-ready values."""
        data = asdict(self)
        data["unseen"] = list(self.unseen)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureDrift:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**data, "unseen": tuple(data.get("unseen", ()))})


@dataclass(frozen=True)
class DriftReport:
    """The result of one check of a window against a reference.

    Attributes:
        features: One result per feature, in the reference's column order.
        drifted: Whether any feature drifted.
        moved: The drifted features, strongest first (smallest adjusted p-value,
            then largest PSI).
        window_size: Rows in the window.
        reference_size: Rows in the reference.
        thresholds: The decision's settings: ``alpha``, ``correction``, ``min_psi``,
            ``psi_bins`` and ``psi_epsilon``.
    """

    features: tuple[FeatureDrift, ...]
    window_size: int
    reference_size: int
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.features)

    @property
    def moved(self) -> tuple[str, ...]:
        hits = [f for f in self.features if f.drifted]
        hits.sort(key=lambda f: (f.p_adjusted, -f.psi))
        return tuple(f.name for f in hits)

    def feature(self, name: str) -> FeatureDrift:
        """The result for one feature; ``KeyError`` naming it if it is not in the report."""
        for result in self.features:
            if result.name == name:
                return result
        raise KeyError(f"feature {name!r} is not in this drift report")

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready values (the derived flags included)."""
        return {
            "drifted": self.drifted,
            "moved": list(self.moved),
            "window_size": self.window_size,
            "reference_size": self.reference_size,
            "thresholds": dict(self.thresholds),
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        """The inverse of :meth:`to_dict`; ``drifted`` and ``moved`` are recomputed."""
        return cls(
            features=tuple(FeatureDrift.from_dict(f) for f in data["features"]),
            window_size=int(data["window_size"]),
            reference_size=int(data["reference_size"]),
            thresholds=dict(data["thresholds"]),
        )
