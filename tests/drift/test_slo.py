"""SLO checks: latency percentiles and error rates over a window."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanflow_agents.drift import ErrorRateObjective, LatencyObjective


def test_latency_percentile_within_and_over_the_objective() -> None:
    latencies = np.arange(1.0, 101.0)  # 1..100 ms: nearest-rank p95 is 95 ms
    met = LatencyObjective(max_ms=100.0).check(latencies)
    assert met.value == 95.0
    assert not met.breached
    assert met.margin == 5.0
    assert met.count == 100
    assert met.objective == "p95 latency <= 100 ms"

    over = LatencyObjective(max_ms=90.0, percentile=99).check(latencies)
    assert over.value == 99.0
    assert over.breached
    assert over.margin == -9.0


def test_latency_of_an_empty_or_tiny_window_never_breaches() -> None:
    empty = LatencyObjective(max_ms=10.0).check([])
    assert empty.value is None
    assert empty.margin is None
    assert not empty.breached
    tiny = LatencyObjective(max_ms=10.0, min_count=20).check([50.0, 60.0, np.nan])
    assert tiny.value == 60.0
    assert tiny.count == 2
    assert not tiny.breached


def test_error_rate_objective() -> None:
    objective = ErrorRateObjective(max_rate=0.05)
    outcomes = [True] * 3 + [False] * 97
    met = objective.check(outcomes)
    assert met.value == pytest.approx(0.03)
    assert not met.breached
    assert met.margin == pytest.approx(0.02)
    breached = objective.check_counts(errors=8, total=100)
    assert breached.breached
    assert breached.margin == pytest.approx(-0.03)
    assert objective.check([]).value is None


def test_results_are_json_ready() -> None:
    result = ErrorRateObjective(max_rate=0.01).check([0, 1, 0, 0])
    assert json.loads(json.dumps(result.to_dict())) == {
        "objective": "error rate <= 0.01",
        "value": 0.25,
        "target": 0.01,
        "breached": True,
        "margin": -0.24,
        "count": 4,
    }


def test_bad_objectives_are_refused() -> None:
    with pytest.raises(ValueError, match=r"percentile lies in \(0, 100\]"):
        LatencyObjective(max_ms=1.0, percentile=0.0)
    with pytest.raises(ValueError, match=r"error rate lies in \[0, 1\]"):
        ErrorRateObjective(max_rate=2.0)
    with pytest.raises(ValueError, match="error count"):
        ErrorRateObjective(max_rate=0.1).check_counts(errors=5, total=3)
