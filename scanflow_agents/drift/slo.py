"""Service-level objectives checked over a window of observations.

Two objectives cover what the tracker observes of an online model: a latency
percentile (``p95 <= 250 ms``) and an error rate (``errors / requests <= 1 %``).
Each check returns an :class:`SLOResult` with the measured value, the objective,
whether it is breached and by how much (``margin``), JSON-ready for a finding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SLOResult:
    """One objective judged on one window.

    Attributes:
        objective: What was required, e.g. ``"p95 latency <= 250 ms"``.
        value: The measured value (``None`` for a window with no observations).
        target: The bound the value must not exceed.
        breached: ``value > target``, once the window holds at least ``min_count``
            observations (an empty or tiny window never breaches).
        margin: ``target - value``: headroom when positive, the overshoot when
            negative; ``None`` with the value.
        count: Observations in the window.
    """

    objective: str
    value: float | None
    target: float
    breached: bool
    margin: float | None
    count: int

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return asdict(self)


def _judge(objective: str, value: float | None, target: float, count: int, least: int) -> SLOResult:
    margin = None if value is None else target - value
    breached = value is not None and count >= least and value > target
    return SLOResult(objective, value, target, breached, margin, count)


@dataclass(frozen=True)
class LatencyObjective:
    """``p<percentile>`` of the latencies in a window must not exceed ``max_ms``.

    The percentile is the nearest-rank one (numpy's ``inverted_cdf``): an observed
    latency that ``percentile`` % of the requests did not exceed, never an
    interpolation between two requests.

    Args:
        max_ms: The bound, in milliseconds.
        percentile: Which percentile, in (0, 100].
        min_count: Fewest observations to judge a window by: with 5 requests a
            p99 is just the slowest one.
    """

    max_ms: float
    percentile: float = 95.0
    min_count: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"a latency percentile lies in (0, 100], not {self.percentile}")

    def check(self, latencies_ms: npt.ArrayLike) -> SLOResult:
        """Judge a window of latencies, in milliseconds (NaN values are left out)."""
        values = np.asarray(latencies_ms, dtype=np.float64).ravel()
        values = values[~np.isnan(values)]
        value = (
            float(np.percentile(values, self.percentile, method="inverted_cdf"))
            if values.size
            else None
        )
        objective = f"p{self.percentile:g} latency <= {self.max_ms:g} ms"
        return _judge(objective, value, self.max_ms, int(values.size), self.min_count)


@dataclass(frozen=True)
class ErrorRateObjective:
    """The share of failed requests in a window must not exceed ``max_rate``.

    Args:
        max_rate: The bound, a fraction in [0, 1].
        min_count: Fewest requests to judge a window by.
    """

    max_rate: float
    min_count: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_rate <= 1.0:
            raise ValueError(f"an error rate lies in [0, 1], not {self.max_rate}")

    def check(self, outcomes: npt.ArrayLike) -> SLOResult:
        """Judge a window of outcomes, one per request: true (or 1) for an error."""
        failed = np.asarray(outcomes, dtype=bool).ravel()
        return self.check_counts(int(failed.sum()), int(failed.size))

    def check_counts(self, errors: int, total: int) -> SLOResult:
        """Judge a window summarised as ``errors`` out of ``total`` requests."""
        if not 0 <= errors <= total:
            raise ValueError(f"an error count lies in [0, total={total}], not {errors}")
        value = errors / total if total else None
        objective = f"error rate <= {self.max_rate:g}"
        return _judge(objective, value, self.max_rate, total, self.min_count)
