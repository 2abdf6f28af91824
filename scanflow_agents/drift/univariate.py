"""Two-sample statistics per feature, on arrays: KS, PSI, chi-squared, and corrections.

These are the pure functions behind :meth:`Reference.check`; they know nothing of
features or names. Each documents its statistic and where its p-value comes from.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from .tails import chi2_survival, kolmogorov, smirnov

FloatArray = npt.NDArray[np.float64]
Correction = Literal["holm", "bh", "none"]

# scipy's cut (Simard & L'Ecuyer 2011): from n·D² = 2.2 on it uses the exact tail
# 2·smirnov(n, D); below it a slow series. smirnov costs O(n) (0.4 ms at n = 900), so it
# is paid only where a decision can hinge on it: p between about 2e-7 and 0.025, and
# for n up to 2,000. Beyond those the shifted limiting law is within 1 % of it.
_EXACT_FROM, _EXACT_UNTIL, _EXACT_MAX_N = 2.2, 8.0, 2000


def ks_statistic(reference_sorted: FloatArray, window_sorted: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D = sup |F_ref(x) - F_win(x)|.

    Both inputs must be sorted and free of NaN. The reference is searched, never
    merged or re-sorted, so a check costs O(m log n) for a window of m values
    against a reference of n: the point of sorting the reference once.

    Between two consecutive window values F_win is constant and F_ref only grows,
    so F_ref - F_win peaks just before a window value (F_ref counted strictly
    below it); F_win - F_ref peaks at a window value (F_ref counted up to it).
    Ties inside the window only add candidates dominated by real ones, so the
    plain index i/m is exact.
    """
    n, m = reference_sorted.size, window_sorted.size
    index = np.arange(m, dtype=np.float64)
    below = np.searchsorted(reference_sorted, window_sorted, side="left")
    # Counting up to each value needs a second search only where it equals a
    # reference value: rare for continuous data, and a gather finds them.
    upto = below.copy()
    tied = reference_sorted[np.minimum(below, n - 1)] == window_sorted
    if np.any(tied):
        upto[tied] = np.searchsorted(reference_sorted, window_sorted[tied], side="right")
    d_plus = np.max(below / n - index / m)
    d_minus = np.max((index + 1.0) / m - upto / n)
    return float(max(d_plus, d_minus, 0.0))


def ks_pvalue(statistic: npt.ArrayLike, n: npt.ArrayLike, m: npt.ArrayLike) -> FloatArray:
    """Asymptotic two-sided p-values of KS statistics, vectorised over features.

    Follows ``scipy.stats.ks_2samp(method="asymp")``: the one-sample Kolmogorov
    distribution of size n_e = round(n·m / (n + m)), approximated by the limiting
    law with its first-order finite-size shift, K(√n_e·D + 1/(6√n_e)): within 2e-4
    of scipy for n_e >= 500 and 3e-3 for n_e >= 50 (scipy evaluates a Pelz-Good
    series there, about 0.3 ms per value in Python). In the band of small p-values
    where a corrected decision is taken (about 2e-7 to 0.025) and for n_e <= 2,000,
    the value is scipy's own exact tail, 2·smirnov(n_e, D).
    """
    d = np.clip(np.asarray(statistic, dtype=np.float64), 0.0, 1.0)
    n_arr, m_arr = np.asarray(n, dtype=np.float64), np.asarray(m, dtype=np.float64)
    d, n_arr, m_arr = np.broadcast_arrays(d, n_arr, m_arr)
    size = np.maximum(np.round(n_arr * m_arr / (n_arr + m_arr)), 1.0)
    root = np.sqrt(size)
    p = np.array(kolmogorov(root * d + 1.0 / (6.0 * root)), dtype=np.float64, ndmin=1)
    spread = np.atleast_1d(size * d * d)
    exact = (spread >= _EXACT_FROM) & (spread < _EXACT_UNTIL) & (size <= _EXACT_MAX_N)
    if np.any(exact):
        sizes, stats = np.atleast_1d(size)[exact], np.atleast_1d(d)[exact]
        p[exact] = 2.0 * smirnov(sizes.astype(np.int64), stats)
    return np.clip(p, 0.0, 1.0).reshape(d.shape)


def psi(reference: FloatArray, window: FloatArray, epsilon: float = 1e-4) -> FloatArray:
    """Population Stability Index, Σ (w_i - r_i) · ln(w_i / r_i), over shared bins.

    ``reference`` and ``window`` are the fractions of each sample per bin, along
    the last axis (one row per feature). Empty bins are raised to ``epsilon`` so
    that a bin seen on one side only counts as a large, finite contribution
    instead of an infinite one; bins empty on both sides add nothing. Rules of
    thumb: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a major one.
    """
    r = np.maximum(reference, epsilon)
    w = np.maximum(window, epsilon)
    return np.asarray(np.sum((w - r) * np.log(w / r), axis=-1), dtype=np.float64)


def chi2_homogeneity(reference: FloatArray, window: FloatArray) -> tuple[float, float]:
    """Pearson chi-squared test that two samples of categories share one distribution.

    The inputs are counts over the same categories (including any seen on one
    side only). The test is on the 2 x k contingency table, not a goodness-of-fit
    against the reference proportions: the reference is a sample too, and a
    category unseen in it has an expected count above zero here instead of an
    infinite statistic. Categories empty on both sides are dropped; p is 1 when
    fewer than two remain (nothing to compare). Returns (statistic, p-value).
    """
    table = np.vstack([reference, window]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 0.0, 1.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return statistic, chi2_survival(dof, statistic)


def adjust(p_values: npt.ArrayLike, method: Correction = "holm") -> FloatArray:
    """P-values adjusted for testing many features at once.

    ``holm`` (Holm 1979) controls the family-wise error rate, the chance that any
    stable feature is flagged, under any dependence between the tests; features of
    one model are usually correlated, which is why it is the default. ``bh``
    (Benjamini-Hochberg 1995) controls the false discovery rate instead: more
    power when many features move, valid for independent or positively dependent
    tests. ``none`` returns the p-values unchanged. Adjusted values are monotone
    in the raw ones and capped at 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    count = p.size
    if method == "none" or count == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        scaled = np.maximum.accumulate((count - np.arange(count)) * ranked)
    elif method == "bh":
        scaled = np.minimum.accumulate((count / np.arange(1, count + 1) * ranked)[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}: use 'holm', 'bh' or 'none'")
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted
