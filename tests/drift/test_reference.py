"""Checks of windows against a reference: quiet on stable data, precise on drift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanflow_agents.drift import DriftReport, Reference

NAMES = [f"f{i:02d}" for i in range(100)]


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference(np.random.default_rng(1).normal(size=(10_000, 100)), NAMES)


def stable_window(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1_000, 100))


def test_no_drift_on_the_same_distribution_for_100_features(reference: Reference) -> None:
    for seed in range(10):
        report = reference.check(stable_window(seed))
        assert not report.drifted, f"seed {seed}: flagged {report.moved}"
        assert report.moved == ()


def test_without_correction_some_features_are_flagged_by_chance(reference: Reference) -> None:
    # About 5 of 100 features fall below alpha = 0.05 by chance: the reason for Holm.
    flagged = [len(reference.check(stable_window(s), correction="none").moved) for s in range(10)]
    assert sum(flagged) >= 20, flagged
    assert sum(1 for f in flagged if f) >= 8, flagged


def test_a_shifted_feature_is_the_only_one_moved(reference: Reference) -> None:
    window = stable_window(99)
    window[:, 42] += 0.3
    report = reference.check(window)
    assert report.drifted
    assert report.moved == ("f42",)
    moved = report.feature("f42")
    assert moved.test == "ks"
    assert moved.p_adjusted < 0.05 <= min(f.p_adjusted for f in report.features if f is not moved)
    assert moved.psi > max(f.psi for f in report.features if f is not moved)


def test_moved_features_are_ordered_strongest_first(reference: Reference) -> None:
    window = stable_window(7)
    window[:, 3] += 0.2
    window[:, 60] += 1.0
    assert reference.check(window).moved == ("f60", "f03")


def test_min_psi_keeps_significant_but_small_shifts_quiet(reference: Reference) -> None:
    window = stable_window(5)
    window[:, 10] += 0.2  # significant at n = 1,000, yet a small PSI
    assert reference.check(window).moved == ("f10",)
    assert reference.check(window, min_psi=0.1).moved == ()


def test_psi_through_the_reference_bins() -> None:
    # 1,000 evenly spread values cut in 4 quantile bins of 250; a window with
    # 40/30/20/10 % in them has PSI sum((w - 0.25) ln(w / 0.25)) = 0.2282.
    ref = Reference(np.arange(1_000.0).reshape(-1, 1), ["x"], bins=4)
    window = np.concatenate(
        [np.full(40, 10.0), np.full(30, 300.0), np.full(20, 600.0), [900.0] * 10]
    )
    report = ref.check(window.reshape(-1, 1))
    assert report.feature("x").psi == pytest.approx(0.2282, abs=1e-4)


def test_categorical_feature_with_an_unseen_category() -> None:
    rng = np.random.default_rng(3)
    data = np.column_stack(
        [rng.normal(size=5_000), rng.choice(["a", "b", "c"], size=5_000, p=[0.5, 0.3, 0.2])]
    ).astype(object)
    ref = Reference(data, ["x", "colour"], categorical=["colour"])
    assert ref.frequencies("colour").keys() == {"a", "b", "c"}

    same = np.column_stack(
        [rng.normal(size=500), rng.choice(["a", "b", "c"], size=500, p=[0.5, 0.3, 0.2])]
    ).astype(object)
    assert not ref.check(same).drifted

    changed = same.copy()
    changed[:60, 1] = "d"  # a category the reference never had
    result = ref.check(changed).feature("colour")
    assert result.test == "chi2"
    assert result.unseen == ("d",)
    assert result.drifted
    assert np.isfinite(result.statistic)
    assert np.isfinite(result.psi)
    assert ref.check(changed).moved == ("colour",)


def test_missing_numeric_values_are_left_out() -> None:
    rng = np.random.default_rng(4)
    ref = Reference(rng.normal(size=(2_000, 2)), ["a", "b"])
    window = rng.normal(size=(300, 2))
    window[:50, 0] = np.nan
    report = ref.check(window)
    assert report.feature("a").count == 250
    assert report.feature("b").count == 300
    assert not report.drifted


def test_report_round_trips_through_json(reference: Reference) -> None:
    window = stable_window(11)
    window[:, 0] -= 0.5
    report = reference.check(window, correction="bh")
    text = json.dumps(report.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert DriftReport.from_dict(data) == report
    assert data["drifted"] is True
    assert data["moved"] == ["f00"]
    assert data["window_size"] == 1_000
    assert data["reference_size"] == 10_000
    assert data["thresholds"] == {
        "alpha": 0.05,
        "correction": "bh",
        "min_psi": 0.0,
        "psi_bins": 10,
        "psi_epsilon": 1e-4,
    }
    assert set(data["features"][0]) == {
        "name",
        "kind",
        "test",
        "statistic",
        "p_value",
        "p_adjusted",
        "psi",
        "drifted",
        "count",
        "unseen",
    }


def test_bad_inputs_are_refused_with_the_reason(reference: Reference) -> None:
    with pytest.raises(ValueError, match="100 columns"):
        reference.check(np.zeros((10, 99)))
    with pytest.raises(ValueError, match="not unique"):
        Reference(np.zeros((3, 2)), ["a", "a"])
    with pytest.raises(ValueError, match=r"\['z'\] are not among the names"):
        Reference(np.zeros((3, 1)), ["a"], categorical=["z"])
    with pytest.raises(ValueError, match="numeric feature 'a' has no value in the window"):
        Reference(np.zeros((3, 1)), ["a"]).check(np.full((2, 1), np.nan))
    with pytest.raises(KeyError, match="'nope'"):
        reference.check(stable_window(0)).feature("nope")
