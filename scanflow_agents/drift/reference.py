"""A reference sample of a model's inputs, prepared once, and checks of windows against it.

Building a :class:`Reference` does the work that does not depend on the window:
numeric columns are sorted and cut into quantile bins (for PSI), categorical
columns are counted. :meth:`Reference.check` then compares a window of recent
inputs with it, every feature at once:

- numeric features: two-sample Kolmogorov-Smirnov (searching the pre-sorted
  reference, asymptotic p-values as scipy's ``ks_2samp(method="asymp")``) and
  PSI over the reference's quantile bins;
- categorical features: chi-squared test of homogeneity on the category counts,
  window categories unseen in the reference pooled into one extra column, and
  PSI over the categories (plus that column);
- all p-values of one check adjusted together (Holm by default, see
  :func:`~scanflow_agents.drift.univariate.adjust`), since testing a hundred
  features at alpha = 0.05 would flag about five of them by chance alone.

Missing values (NaN in numeric features) are left out per feature; in
categorical features every value, ``None`` or ``nan`` included, is a category,
compared by its ``str()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .reports import DriftReport, FeatureDrift
from .univariate import (
    Correction,
    FloatArray,
    adjust,
    chi2_homogeneity,
    ks_pvalue,
    ks_statistic,
    psi,
)


class Reference:
    """Training-time inputs to compare windows of production inputs with.

    Args:
        data: A 2-D array-like, one row per sample, one column per feature (an
            object array may mix numeric and categorical columns).
        names: The name of each column, unique.
        categorical: Names of the categorical features; all others are numeric.
        bins: Quantile bins per numeric feature for PSI (fewer if the reference
            has ties at the edges).
        psi_epsilon: Floor of a bin's fraction in PSI, so empty bins stay finite.

    Raises:
        ValueError: The data is not 2-D, names do not match its columns, a
            categorical name is unknown, or a numeric feature has no value.
    """

    def __init__(
        self,
        data: npt.ArrayLike,
        names: Sequence[str],
        *,
        categorical: Iterable[str] = (),
        bins: int = 10,
        psi_epsilon: float = 1e-4,
    ) -> None:
        self.names = tuple(names)
        self.categorical = frozenset(categorical)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"feature names of the reference are not unique: {self.names}")
        if unknown := self.categorical - set(self.names):
            raise ValueError(f"categorical features {sorted(unknown)} are not among the names")
        if bins < 2:
            raise ValueError(f"a reference needs at least 2 PSI bins, not {bins}")
        table = _table(data, len(self.names), "reference")
        self.size = table.shape[0]
        self.bins = bins
        self.psi_epsilon = psi_epsilon
        self._numeric = [i for i, name in enumerate(self.names) if name not in self.categorical]
        self._categoric = [i for i, name in enumerate(self.names) if name in self.categorical]

        # Sorted once here so that every check only searches (see ks_statistic).
        block = np.sort(_numbers(table, self._numeric, "reference"), axis=0)
        counts = block.shape[0] - np.count_nonzero(np.isnan(block), axis=0)
        quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        self._sorted: list[FloatArray] = []
        # Interior edges only: the outer bins are open, so a window beyond the
        # reference's range still lands in a bin. Ties collapse duplicate edges; the
        # rows are padded with +inf, whose bins stay empty on both sides.
        self._edges = np.full((len(self._numeric), bins - 1), np.inf)
        for k, column in enumerate(self._numeric):
            values = np.ascontiguousarray(block[: counts[k], k])
            if values.size == 0:
                raise ValueError(
                    f"numeric feature {self.names[column]!r} has no value in the reference"
                )
            edges = np.unique(np.quantile(values, quantiles))
            self._edges[k, : edges.size] = edges
            self._sorted.append(values)
        self._shares = _shares(self._sorted, self._edges)

        self._categories: list[npt.NDArray[np.str_]] = []
        self._category_counts: list[FloatArray] = []
        for column in self._categoric:
            keys, freq = np.unique(table[:, column].astype(str), return_counts=True)
            self._categories.append(keys)
            self._category_counts.append(freq.astype(np.float64))

    def frequencies(self, name: str) -> dict[str, int]:
        """The reference's count of each category of a categorical feature."""
        k = self._categoric.index(self.names.index(name))
        return {
            str(c): int(n)
            for c, n in zip(self._categories[k], self._category_counts[k], strict=True)
        }

    def check(
        self,
        window: npt.ArrayLike,
        *,
        alpha: float = 0.05,
        correction: Correction = "holm",
        min_psi: float = 0.0,
    ) -> DriftReport:
        """Compare a window of recent inputs, with the reference's columns, to the reference.

        Args:
            window: A 2-D array-like with the reference's columns in its order.
            alpha: Level of the corrected tests: a feature drifted when its adjusted
                p-value is below it.
            correction: ``holm``, ``bh`` or ``none`` (see ``univariate.adjust``).
            min_psi: A floor on practical size: a significant feature with a PSI
                below it is not flagged. 0 leaves the decision to the tests alone.

        Returns:
            The report, JSON-ready through ``to_dict()``.

        Raises:
            ValueError: The window's shape does not match, or a numeric feature has
                no value in it.
        """
        table = _table(window, len(self.names), "window")
        rows = table.shape[0]
        # One vectorised sort of every numeric column; the per-feature loop below only
        # searches (numpy's searchsorted is 1-D).
        block = np.sort(_numbers(table, self._numeric, "window"), axis=0)
        counts = rows - np.count_nonzero(np.isnan(block), axis=0)
        results: dict[int, dict[str, Any]] = {}
        columns: list[FloatArray] = []
        for k, column in enumerate(self._numeric):
            values = block[: counts[k], k]
            if values.size == 0:
                raise ValueError(
                    f"numeric feature {self.names[column]!r} has no value in the window"
                )
            columns.append(values)
            results[column] = {
                "kind": "numeric",
                "test": "ks",
                "count": int(values.size),
                "statistic": ks_statistic(self._sorted[k], values),
            }
        if self._numeric:
            sizes = np.array([s.size for s in self._sorted], dtype=np.float64)
            stats = np.array([results[c]["statistic"] for c in self._numeric])
            p_values = ks_pvalue(stats, sizes, counts)
            shifts = psi(self._shares, _shares(columns, self._edges), self.psi_epsilon)
            for k, column in enumerate(self._numeric):
                results[column].update(p_value=float(p_values[k]), psi=float(shifts[k]))
        for k, column in enumerate(self._categoric):
            results[column] = self._categorical(k, table[:, column].astype(str))

        order = range(len(self.names))
        adjusted = adjust([results[i]["p_value"] for i in order], correction)
        features = tuple(
            FeatureDrift(
                name=self.names[i],
                p_adjusted=float(adjusted[i]),
                drifted=bool(adjusted[i] < alpha and results[i]["psi"] >= min_psi),
                **results[i],
            )
            for i in order
        )
        thresholds = {
            "alpha": alpha,
            "correction": correction,
            "min_psi": min_psi,
            "psi_bins": self.bins,
            "psi_epsilon": self.psi_epsilon,
        }
        return DriftReport(
            features, window_size=rows, reference_size=self.size, thresholds=thresholds
        )

    def _categorical(self, k: int, values: npt.NDArray[np.str_]) -> dict[str, Any]:
        keys, reference = self._categories[k], self._category_counts[k]
        seen_keys, seen_counts = np.unique(values, return_counts=True)
        at = np.clip(np.searchsorted(keys, seen_keys), 0, keys.size - 1)
        known = keys[at] == seen_keys
        window = np.zeros(keys.size + 1)
        np.add.at(window, at[known], seen_counts[known])
        # Unseen categories are pooled into one column: the test then asks "how much
        # of the window is new", whatever the number of distinct new values.
        window[-1] = seen_counts[~known].sum()
        padded = np.append(reference, 0.0)
        statistic, p_value = chi2_homogeneity(padded, window)
        return {
            "kind": "categorical",
            "test": "chi2",
            "count": int(values.size),
            "statistic": statistic,
            "p_value": p_value,
            "psi": float(psi(padded / padded.sum(), window / window.sum(), self.psi_epsilon)),
            "unseen": tuple(str(c) for c in seen_keys[~known]),
        }


def _table(data: npt.ArrayLike, width: int, what: str) -> npt.NDArray[Any]:
    table = np.asarray(data)
    if table.ndim != 2 or table.shape[1] != width or table.shape[0] == 0:
        raise ValueError(
            f"the {what} must be a non-empty 2-D array with {width} columns, "
            f"not one of shape {table.shape}"
        )
    return table


def _numbers(table: npt.NDArray[Any], columns: list[int], what: str) -> FloatArray:
    try:
        return np.asarray(table[:, columns], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"numeric features of the {what} must hold numbers: {error}") from error


def _shares(columns: list[FloatArray], edges: FloatArray) -> FloatArray:
    """Fractions of each sorted column in its bins (-inf, e1], (e1, e2], ..., (ek, inf)."""
    upto = np.empty((len(columns), edges.shape[1] + 2))
    upto[:, 0] = 0.0
    for k, values in enumerate(columns):
        upto[k, 1:-1] = np.searchsorted(values, edges[k], side="right")
        upto[k, -1] = values.size
    return np.asarray(np.diff(upto, axis=1) / upto[:, -1:], dtype=np.float64)
