"""The tail probabilities of tails.py are scipy's, over the range the checker uses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from scanflow_agents.drift.tails import chi2_survival, kolmogorov, smirnov


def test_kolmogorov_is_scipys_on_both_sides_of_the_switch() -> None:
    x = np.concatenate([[0.0, 1e-3], np.linspace(0.05, 4.0, 300), [6.0, 30.0]])
    assert kolmogorov(x) == pytest.approx(special.kolmogorov(x), rel=1e-12, abs=1e-14)
    assert kolmogorov(0.5).shape == ()


@pytest.mark.parametrize("n", [1, 2, 7, 50, 455, 909, 2000])
def test_smirnov_is_scipys_exact_tail(n: int) -> None:
    d = np.linspace(0.0, 1.0, 101)
    ours, theirs = smirnov(n, d), special.smirnov(n, d)
    # Relative where the tail is representable, absolute where it underflows.
    assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-300)
    # d with n(1 - d) a whole number: the last term of the sum vanishes.
    assert smirnov(n, 1 - 1 / max(n, 2)) == pytest.approx(special.smirnov(n, 1 - 1 / max(n, 2)))


@pytest.mark.parametrize("dof", [1, 2, 3, 9, 63, 400])
def test_chi2_survival_is_scipys_below_and_above_the_switch(dof: int) -> None:
    # The switch from the series to the continued fraction is at x = dof + 2.
    for x in np.concatenate([[0.0, 1e-6], np.linspace(0.01, 3.0 * dof + 60.0, 150)]):
        expected = special.chdtrc(dof, x)
        assert chi2_survival(dof, float(x)) == pytest.approx(expected, rel=1e-10, abs=1e-300)
