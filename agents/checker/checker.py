"""The checker: the "analyse" of MAPE-K. It turns the tracker's windows into findings.

Three rules on ``observation.tracker.serving``, one closed window of one
workflow node at a time:

- ``drift``: the window's input sample, per served model URI, against that
  model's reference (see :mod:`.references`): KS on every feature with a
  multiple-testing correction, PSI as extra evidence. A window is drifted when
  at least ``min_features`` features are significant; ``consecutive`` drifted
  windows in a row make one ``finding.drift.<workflow>``, and no other until a
  window is clean again or another model is served: one finding per episode.
- ``performance``: ADWIN on the stream of labelled errors per served model; a
  change where the error rate rose makes ``finding.performance.<workflow>``.
- ``slo``: p95 latency and error rate against the workflow's objectives, as
  ``finding.slo.<workflow>`` for every window with traffic, breached or not:
  the improver scales out on breaches and in on the all-clear.

Every finding is also the rule's :class:`~scanflow_agents.Decision`, so it is
in the audit trail; a healthy window decides nothing (its SLO event is still
sent). The statistics run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from pydantic import ValidationError
from scanflow_agents.builtin.checker.monitors import Monitor, Monitors, Spread
from scanflow_agents.builtin.checker.references import (
    Baseline,
    NoReference,
    from_model,
    from_windows,
)
from scanflow_agents.builtin.checker.settings import CheckerSettings

from scanflow_agents import Agent, Decision, Event, rule
from scanflow_agents.drift import DriftReport, ErrorRateObjective
from scanflow_agents.knowledge import KnowledgeUnavailable

logger = logging.getLogger("scanflow_agents.builtin.checker")

SERVING = "observation.tracker.serving"


class Checker(Agent):
    """Checks served inputs for drift, labelled errors for a rise, and windows against SLOs.

    Configured by ``settings.agents["checker"]`` (see :class:`CheckerSettings`).
    """

    name = "checker"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options = CheckerSettings()
        self.baselines: dict[str, Baseline] = {}
        self.monitors = Monitors(self.options.adwin_delta)
        self.spread = Spread()

    async def on_start(self) -> None:
        """Validate the settings; start with no references and no history."""
        try:
            self.options = CheckerSettings.from_settings(self.settings)
        except ValidationError as exc:
            raise ValueError(f"checker: bad settings in settings.agents.checker: {exc}") from None
        self.baselines = {}
        self.monitors = Monitors(self.options.adwin_delta)
        self.spread = Spread()
        logger.info(
            "checker: references from %s, alpha %g (%s), %d drifted window(s) make a finding",
            self.options.reference,
            self.options.alpha,
            self.options.correction,
            self.options.consecutive,
        )

    # -- input drift ---------------------------------------------------------------------

    @rule(on=SERVING, timeout=120)
    async def drift(self, event: Event) -> Decision | None:
        """Test the window's inputs of each served model against the model's reference."""
        window = _window(event)
        if window is None:
            return None
        workflow, node = window["workflow"], window["node"]
        uris = list(window.get("model_uris") or [])
        monitors = self.monitors.window(workflow, node, uris)
        sample = window.get("sample") or {}
        columns = [str(c) for c in sample.get("columns") or []]
        findings = []
        for uri, rows in _rows_by_model(sample, uris).items():
            if rows.shape[0] < self.options.min_rows:
                continue  # too few rows to say anything; the streak stands
            baseline = await self._baseline(uri, columns)
            if baseline is None:
                continue
            if baseline.reference is None:
                await asyncio.to_thread(baseline.collect, rows, columns)
                continue
            report = await asyncio.to_thread(
                baseline.reference.check,
                rows,
                alpha=self.options.alpha,
                correction=self.options.correction,
                min_psi=self.options.min_psi,
            )
            drifted = len(report.moved) >= self.options.min_features
            monitor = monitors[uri]
            if monitor.drift(drifted, self.options.consecutive):
                findings.append(self._drift_finding(window, uri, report, baseline, monitor))
        if not findings:
            return None
        for finding in findings:
            await self.emit(f"finding.drift.{workflow}", finding)
        moved = ", ".join(findings[0]["features_moved"][:5])
        return Decision(
            action="drift",
            reason=(
                f"inputs of {workflow}/{node} ({findings[0]['model_uri']}) drifted in "
                f"{findings[0]['windows_in_row']} windows in a row: {moved}"
            ),
            evidence={"findings": findings},
        )

    # -- replicas apart from their siblings ------------------------------------------------

    @rule(on=SERVING)
    async def replicas(self, event: Event) -> Decision | None:
        """Replicas served other inputs than the rest of the fleet, windows in a row.

        The tracker lists each window's most deviant replicas (per-feature
        z-scores of a replica's mean against the fleet's); a replica counts as
        apart when at least ``min_features`` features pass the critical z of
        ``alpha``, corrected for every feature of every replica of the window
        (Bonferroni). ``consecutive`` such windows make one
        ``finding.replicas.<workflow>`` naming the replicas, and no other for
        them until they are back with the others.
        """
        window = _window(event)
        if window is None or "replica_deviations" not in window:
            return None
        workflow, node = window["workflow"], window["node"]
        options = self.options
        apart = self.spread.window(window, alpha=options.alpha, min_features=options.min_features)
        found = self.spread.episodes((workflow, node), apart, self.options.consecutive)
        if not found:
            return None
        finding = {
            "workflow": workflow,
            "node": node,
            "replicas": sorted(found),
            "of_replicas": window.get("replicas"),
            "features": {replica: apart[replica] for replica in sorted(found)},
            "windows_in_row": self.options.consecutive,
            "window": window.get("window"),
        }
        await self.emit(f"finding.replicas.{workflow}", finding)
        names = ", ".join(sorted(found)[:5])
        return Decision(
            action="replicas-apart",
            reason=(
                f"{len(found)} of {window.get('replicas')} replicas of {workflow}/{node} were "
                f"served other inputs than the rest in {self.options.consecutive} windows in a "
                f"row: {names}"
            ),
            evidence=finding,
        )

    async def _baseline(self, uri: str, columns: list[str]) -> Baseline | None:
        if uri in self.baselines:
            return self.baselines[uri]
        options = self.options
        if options.reference == "windows":
            baseline = from_windows(uri, options.reference_windows)
        else:
            try:
                baseline = await from_model(
                    self.knowledge, uri, options.reference_artifact, columns
                )
            except KnowledgeUnavailable as exc:
                logger.warning("checker: no reference for %s now (window not tested): %s", uri, exc)
                return None
            except NoReference as exc:
                logger.warning("checker: %s; the first windows served become the reference", exc)
                baseline = from_windows(uri, options.reference_windows, why=str(exc))
        logger.info("checker: the reference of %s is %s", uri, baseline.source)
        self.baselines[uri] = baseline
        return baseline

    def _drift_finding(
        self,
        window: dict[str, Any],
        uri: str,
        report: DriftReport,
        baseline: Baseline,
        monitor: Monitor,
    ) -> dict[str, Any]:
        moved = [report.feature(name) for name in report.moved]
        return {
            "workflow": window["workflow"],
            "node": window["node"],
            "model_uri": uri,
            "test": "ks",
            "statistic": max(f.statistic for f in moved),
            "alpha": self.options.alpha,
            "correction": self.options.correction,
            "features_moved": list(report.moved),
            "features_tested": len(report.features),
            "windows_in_row": monitor.streak,
            "window": window.get("window"),
            "reference": baseline.describe(),
            "evidence": {
                "window_rows": report.window_size,
                "reference_rows": report.reference_size,
                "thresholds": report.thresholds,
                "features": [
                    {
                        "name": f.name,
                        "statistic": f.statistic,
                        "p_value": f.p_value,
                        "p_adjusted": f.p_adjusted,
                        "psi": f.psi,
                    }
                    for f in moved
                ],
            },
        }

    # -- performance drift ---------------------------------------------------------------

    @rule(on=SERVING, timeout=60)
    async def performance(self, event: Event) -> Decision | None:
        """Feed each served model's labelled errors to its ADWIN; a rise is a finding."""
        window = _window(event)
        if window is None:
            return None
        workflow, node = window["workflow"], window["node"]
        monitors = self.monitors.window(workflow, node, list(window.get("model_uris") or []))
        findings = []
        for uri, counts in (window.get("by_model") or {}).items():
            matched, correct = int(counts.get("matched") or 0), int(counts.get("correct") or 0)
            monitor = monitors.get(uri)
            if monitor is None or matched <= 0:
                continue
            change = await asyncio.to_thread(monitor.errors, matched, correct)
            if change is None:
                continue
            findings.append(
                {
                    "workflow": workflow,
                    "node": node,
                    "model_uri": uri,
                    "detector": "adwin",
                    "error_rate_before": change["before"],
                    "error_rate_now": change["now"],
                    "error_rate_estimate": change["estimate"],
                    "samples": monitor.adwin.width,
                    "labels_seen": monitor.labels,
                    "window": window.get("window"),
                    "evidence": monitor.adwin.state(),
                }
            )
        if not findings:
            return None
        for finding in findings:
            await self.emit(f"finding.performance.{workflow}", finding)
        first = findings[0]
        return Decision(
            action="performance-drift",
            reason=(
                f"error rate of {workflow}/{node} ({first['model_uri']}) rose from "
                f"{first['error_rate_before']:.1%} to {first['error_rate_now']:.1%}"
            ),
            evidence={"findings": findings},
        )

    # -- service-level objectives --------------------------------------------------------

    @rule(on=SERVING, timeout=30)
    async def slo(self, event: Event) -> Decision | None:
        """Judge a window with traffic against the workflow's objectives; always report it."""
        window = _window(event)
        if window is None or not int(window.get("requests") or 0):
            return None
        workflow, node = window["workflow"], window["node"]
        latency_objective, error_objective = self.options.objectives(
            workflow, window.get("objectives")
        )
        requests, errors = int(window["requests"]), int(window.get("errors") or 0)
        p95 = _felt_p95(window)
        least = self.options.slo_min_requests
        # The window carries a p95 already (combined from the replicas), not latencies:
        # the library's LatencyObjective judges raw latencies, so the bound is compared here.
        slow = p95 is not None and requests >= least and p95 > latency_objective
        failing = ErrorRateObjective(error_objective, min_count=least).check_counts(
            min(errors, requests), requests
        )
        breaches = [name for name, hit in (("latency", slow), ("errors", failing.breached)) if hit]
        finding = {
            "workflow": workflow,
            "node": node,
            "breached": bool(breaches),
            "breaches": breaches,
            "latency_p95_ms": p95,
            "server_p95_ms": (window.get("latency_ms") or {}).get("p95"),
            "probe_ms": window.get("probe_ms"),
            "objective_ms": latency_objective,
            "error_rate": failing.value,
            "error_objective": error_objective,
            "requests": requests,
            "rps": window.get("rps"),
            "replicas": window.get("replicas"),
            "model_uris": window.get("model_uris"),
            "window": window.get("window"),
        }
        await self.emit(f"finding.slo.{workflow}", finding)
        if not breaches:
            return None
        figures = {
            "latency": f"p95 {p95:.1f} ms > {latency_objective:g} ms" if slow else "",
            "errors": f"error rate {failing.value:.2%} > {error_objective:.2%}",
        }
        return Decision(
            action="slo-breach",
            reason=f"{workflow}/{node}: "
            + "; ".join(figures[b] for b in breaches)
            + f" at {float(window.get('rps') or 0):.1f} rps on {window.get('replicas')} replica(s)",
            evidence=finding,
        )


def _felt_p95(window: dict[str, Any]) -> float | None:
    """The window's p95 latency as a client feels it, in ms.

    The replicas time a request inside the server; what happens around it (the
    socket, the kernel, a stalled event loop, Nagle's algorithm holding the
    answer back) they cannot see. Each replica measures that part with a probe
    (back-to-back requests on one kept-alive connection to itself): the
    window's ``probe_ms``, added to the servers' p95.
    """
    p95 = (window.get("latency_ms") or {}).get("p95")
    if p95 is None:
        return None
    probe = window.get("probe_ms")
    return float(p95) + (float(probe) if isinstance(probe, int | float) else 0.0)


def _window(event: Event) -> dict[str, Any] | None:
    """The tracker's window in an observation event, or None (logged) if it is not one."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    window = payload.get("value")
    if not isinstance(window, dict) or not window.get("workflow") or not window.get("node"):
        logger.warning("checker: %s from %r holds no serving window", event.topic, event.source)
        return None
    return window


def _rows_by_model(sample: dict[str, Any], uris: list[str]) -> dict[str, np.ndarray]:
    """The sample's rows grouped by the model URI that got them."""
    rows = sample.get("rows") or []
    if not rows or not uris:
        return {}
    data = np.asarray(rows, dtype=np.float64)
    index = sample.get("model_index")
    if index is None or len(index) != len(rows) or len(uris) == 1:
        return {uris[0]: data} if len(uris) == 1 else {}
    which = np.asarray(index)
    return {uri: data[which == i] for i, uri in enumerate(uris) if np.any(which == i)}
