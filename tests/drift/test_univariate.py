"""The statistics on arrays: KS against scipy, PSI by hand, chi-squared, corrections."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scanflow_agents.drift.univariate import (
    adjust,
    chi2_homogeneity,
    ks_pvalue,
    ks_statistic,
    psi,
)


@pytest.mark.parametrize(
    ("n", "m", "shift", "rounding"),
    [
        (10_000, 1_000, 0.0, None),
        (10_000, 1_000, 0.1, None),
        (2_000, 500, 0.2, None),
        (5_000, 300, 0.0, 1),  # ties within and across the samples
        (800, 800, 0.15, 0),
    ],
)
def test_ks_matches_scipy_asymptotic(n: int, m: int, shift: float, rounding: int | None) -> None:
    rng = np.random.default_rng(n + m)
    for _ in range(20):
        reference = rng.normal(size=n)
        window = rng.normal(loc=shift, size=m)
        if rounding is not None:
            reference, window = np.round(reference, rounding), np.round(window, rounding)
        expected = stats.ks_2samp(reference, window, method="asymp")
        d = ks_statistic(np.sort(reference), np.sort(window))
        assert d == pytest.approx(expected.statistic, abs=1e-12)
        p = ks_pvalue(d, n, m)
        assert p == pytest.approx(expected.pvalue, rel=5e-3, abs=5e-4)


def test_ks_pvalue_is_scipys_exact_tail_where_decisions_are_taken() -> None:
    # n·D² in [2.2, 8): p from about 0.025 down to 2e-7, the band of corrected alphas.
    size = round(10_000 * 1_000 / 11_000)
    d = np.sqrt(np.linspace(2.2, 7.9, 25) / size)
    expected = stats.kstwo.sf(d, size)
    assert ks_pvalue(d, 10_000, 1_000) == pytest.approx(expected, rel=1e-9)


def test_ks_statistic_of_disjoint_samples_is_one() -> None:
    assert ks_statistic(np.arange(10.0), np.arange(20.0, 25.0)) == 1.0
    assert ks_statistic(np.arange(20.0, 25.0), np.arange(10.0)) == 1.0


def test_psi_known_value() -> None:
    reference = np.array([0.25, 0.25, 0.25, 0.25])
    window = np.array([0.4, 0.3, 0.2, 0.1])
    by_hand = sum((w - 0.25) * np.log(w / 0.25) for w in window)
    assert psi(reference, window) == pytest.approx(by_hand)
    assert psi(reference, window) == pytest.approx(0.2282, abs=1e-4)
    assert psi(reference, reference) == 0.0


def test_psi_of_an_empty_bin_is_large_and_finite() -> None:
    value = psi(np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2]), epsilon=1e-4)
    assert np.isfinite(value)
    assert value == pytest.approx((0.2 - 1e-4) * np.log(0.2 / 1e-4) + 2 * -0.1 * np.log(0.8))


def test_chi2_matches_scipy_contingency_with_a_category_seen_once_side() -> None:
    reference = np.array([500.0, 300.0, 200.0, 0.0])
    window = np.array([40.0, 30.0, 20.0, 10.0])  # the last category is new
    statistic, p = chi2_homogeneity(reference, window)
    expected = stats.chi2_contingency(np.vstack([reference, window]), correction=False)
    assert statistic == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue)
    assert p < 1e-10


def test_chi2_with_one_category_has_nothing_to_compare() -> None:
    assert chi2_homogeneity(np.array([10.0, 0.0]), np.array([5.0, 0.0])) == (0.0, 1.0)


def test_holm_and_bh_by_hand() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then running maximum.
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted times 4/1, 4/2, 4/3, 4/4, then running minimum from the top.
    assert adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust(p, "none") == pytest.approx(p)
    assert adjust(np.array([0.9, 0.8]), "holm") == pytest.approx([1.0, 1.0])


def test_unknown_correction_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown correction 'sidak'"):
        adjust([0.1], "sidak")  # type: ignore[arg-type]
