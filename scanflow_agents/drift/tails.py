"""Tail probabilities of the test statistics, on numpy and the standard library only.

The checker runs in an agent image without scipy (114 MB of it for three
functions). Each function here computes, from its textbook formula, the value of
the scipy function it names; ``tests/drift/test_tails.py`` compares them with
scipy over the range the checker uses.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Terms of the alternating series beyond which exp(-2k²x²) is below double precision
# for every x where that series is used (x >= 1).
_KOLMOGOROV_TERMS = 20
# Where the survival series (alternating, fast for large x) gives way to the series of
# the CDF (fast for small x): both converge in a few terms around 1.
_KOLMOGOROV_SWITCH = 1.0


def kolmogorov(x: npt.ArrayLike) -> FloatArray:
    """P(K > x) for Kolmogorov's limiting distribution (scipy.special.kolmogorov).

    For x >= 1: 2 Σ_{k>=1} (-1)^(k-1) exp(-2 k² x²). Below, the complement of
    P(K <= x) = √(2π)/x Σ_{k>=1} exp(-(2k-1)² π² / (8 x²)), which converges
    quickly where the first series does not.
    """
    values = np.asarray(x, dtype=np.float64)
    flat = values.reshape(-1)
    result = np.ones_like(flat)
    k = np.arange(1, _KOLMOGOROV_TERMS + 1, dtype=np.float64)
    high = flat >= _KOLMOGOROV_SWITCH
    if np.any(high):
        xs = flat[high][:, None]
        signs = np.where(k % 2 == 1, 1.0, -1.0)
        result[high] = 2.0 * np.sum(signs * np.exp(-2.0 * k * k * xs * xs), axis=1)
    low = (flat > 0) & ~high
    if np.any(low):
        xs = flat[low][:, None]
        odd = 2.0 * k - 1.0
        cdf = (
            math.sqrt(2.0 * math.pi)
            / xs[:, 0]
            * np.sum(np.exp(-odd * odd * math.pi**2 / (8.0 * xs * xs)), axis=1)
        )
        result[low] = 1.0 - cdf
    return np.clip(result, 0.0, 1.0).reshape(values.shape)


def smirnov(n: npt.ArrayLike, d: npt.ArrayLike) -> FloatArray:
    """P(D+_n >= d), the exact one-sided tail of n samples (scipy.special.smirnov).

    The Birnbaum-Tingey sum, d Σ_{j=0}^{⌊n(1-d)⌋} C(n,j) (1-d-j/n)^(n-j) (d+j/n)^(j-1),
    with every term in logarithms: all are positive, so the sum loses nothing to
    cancellation. O(n) per value; the caller keeps n in the low thousands.
    """
    sizes, stats = np.broadcast_arrays(np.asarray(n), np.asarray(d, dtype=np.float64))
    out = np.empty(sizes.shape, dtype=np.float64)
    for index in np.ndindex(sizes.shape):
        out[index] = _smirnov_one(int(sizes[index]), float(stats[index]))
    return out


def _smirnov_one(n: int, d: float) -> float:
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    j = np.arange(0, math.floor(n * (1.0 - d) + 1e-12) + 1, dtype=np.float64)
    rest = 1.0 - d - j / n
    # The last term has rest == 0 when n(1-d) is a whole number: 0^(n-j) is 0 there
    # (n - j > 0), and it adds nothing.
    alive = rest > 0
    j, rest = j[alive], rest[alive]
    log_binomial = math.lgamma(n + 1) - _lgamma(j + 1) - _lgamma(n - j + 1)
    logs = log_binomial + (n - j) * np.log(rest) + (j - 1) * np.log(d + j / n)
    return float(min(max(d * np.sum(np.exp(logs)), 0.0), 1.0))


def _lgamma(values: FloatArray) -> FloatArray:
    return np.array([math.lgamma(v) for v in values], dtype=np.float64)


def chi2_survival(dof: int, x: float) -> float:
    """P(X > x) for a chi-squared variable with ``dof`` degrees (scipy.special.chdtrc).

    The regularised upper incomplete gamma Q(dof/2, x/2): below a + 1 from the
    series of P (Q = 1 - P), above it from Legendre's continued fraction, which
    converges fast there (evaluated with the modified Lentz method).
    """
    if x <= 0.0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    if z < a + 1.0:
        return max(0.0, 1.0 - _lower_series(a, z))
    return min(1.0, _upper_fraction(a, z))


_ITERATIONS = 500
_EPSILON = 1e-15
_TINY = 1e-300


def _lower_series(a: float, z: float) -> float:
    """P(a, z) = z^a e^-z / Γ(a+1) · Σ_k z^k / ((a+1)...(a+k))."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_ITERATIONS):
        denominator += 1.0
        term *= z / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            break
    return total * math.exp(-z + a * math.log(z) - math.lgamma(a))


def _upper_fraction(a: float, z: float) -> float:
    """Q(a, z) = z^a e^-z / Γ(a) · 1/(z+1-a- 1·(1-a)/(z+3-a- 2·(2-a)/(z+5-a- ...)))."""
    b = z + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    fraction = d
    for i in range(1, _ITERATIONS + 1):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        fraction *= delta
        if abs(delta - 1.0) < _EPSILON:
            break
    return math.exp(-z + a * math.log(z) - math.lgamma(a)) * fraction
