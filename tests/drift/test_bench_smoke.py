"""The drift benchmark runs end to end and reports every section.

Only completeness is checked: whether the goals are met is the benchmark's
business (a loaded CI machine must not fail the suite).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "drift.py"
STREAMS = ("bernoulli_p0.1", "gaussian")
DETECTORS = ("adwin", "page_hinkley", "page_hinkley_classic")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "drift.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert run.returncode == 0, f"bench/drift.py --quick failed:\n{run.stderr[-4000:]}"
    assert "| goal |" in run.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("detector", DETECTORS)
def test_every_detector_has_false_alarms_delays_and_cost(
    results: dict[str, Any], stream: str, detector: str
) -> None:
    fa = results["false_alarms"][stream][detector]
    assert fa["samples"] > 0
    assert fa["per_100k"] >= 0
    assert fa["update_us"] > 0
    for shift in ("1_std", "0.25_std"):
        delay = results["detection_delay"][stream][detector][shift]
        assert delay["runs"] > 0
        assert delay["median"] > 0
        assert 0 <= delay["missed"] <= delay["runs"]
    assert results["update_cost_us"][detector] > 0


def test_check_cost_against_scipy(results: dict[str, Any]) -> None:
    check = results["check"]
    for key in ("ours_ms", "reference_build_ms", "scipy_default_ms", "speedup"):
        assert check[key] > 0, key
    assert check["max_statistic_diff_vs_scipy"] < 1e-9
    assert 0 <= check["max_pvalue_diff_vs_scipy_asymp"] < 1e-2


def test_every_goal_has_a_verdict_and_the_environment_is_recorded(
    results: dict[str, Any],
) -> None:
    assert len(results["goals"]) == 5
    assert all(isinstance(goal["pass"], bool) for goal in results["goals"])
    assert results["environment"]["quick"] is True
    assert results["environment"]["seconds"] > 0
