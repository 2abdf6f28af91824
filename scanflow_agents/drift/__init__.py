"""Statistics for the checker: drift of inputs, changes in error streams, SLOs.

A standalone library on numpy (and nothing else of scanflow_agents: the tail
probabilities scipy would give are computed in ``tails.py``), so it is
imported only by whoever checks: ``import scanflow_agents`` stays free of
numpy.

- :class:`Reference` and :meth:`Reference.check`: univariate drift of a window of
  inputs against training data (KS, PSI, chi-squared; Holm-corrected), as a
  :class:`DriftReport`.
- :class:`ADWIN` (the default) and :class:`PageHinkley`: streaming detectors of a
  change in the mean of a stream such as a model's errors.
- :class:`LatencyObjective` and :class:`ErrorRateObjective`: SLO checks, as
  :class:`SLOResult`.
"""

from __future__ import annotations

from .reference import Reference
from .reports import DriftReport, FeatureDrift
from .slo import ErrorRateObjective, LatencyObjective, SLOResult
from .streaming import ADWIN, PageHinkley

__all__ = [
    "ADWIN",
    "DriftReport",
    "ErrorRateObjective",
    "FeatureDrift",
    "LatencyObjective",
    "PageHinkley",
    "Reference",
    "SLOResult",
]
