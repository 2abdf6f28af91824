"""Drift in a few replicas of a fleet: the tracker folds, the checker names them."""

from __future__ import annotations

from typing import Any

import numpy as np
from scanflow_agents.builtin.checker import Checker
from scanflow_agents.builtin.tracker import Tracker

from scanflow_agents import Settings
from scanflow_agents.testing import AgentHarness

REPORTS = "telemetry.serving.serve.model"
FEATURES = [f"pixel_{i}" for i in range(64)]
APART = {"r03", "r17"}  # served other inputs from the second window on


def fleet_reports(end: float, rng: np.random.Generator, apart: set[str]) -> list[dict[str, Any]]:
    """One report per replica of 40, each 50 rows of one distribution (mean 5, sd 3)."""
    reports = []
    for number in range(40):
        replica = f"r{number:02d}"
        means = 5 + rng.normal(0, 3 / np.sqrt(50), len(FEATURES))
        if replica in apart:
            means[:10] += 3.0  # ten features moved by a standard deviation
        reports.append(
            {
                "workflow": "serve",
                "node": "model",
                "replica": replica,
                "model_uri": "models:/digits/1",
                "window": {"start": end - 5, "end": end, "seconds": 5.0},
                "requests": 50,
                "errors": 0,
                "latency_ms": {"p50": 2.0, "p95": 4.0, "p99": 6.0},
                "features": {
                    name: {"count": 50, "mean": float(mean), "std": 3.0}
                    for name, mean in zip(FEATURES, means, strict=True)
                },
                "labels": {},
                "sample": {"columns": FEATURES, "rows": []},
            }
        )
    return reports


def settings() -> Settings:
    return Settings.defaults().model_copy(
        update={
            "agents": {
                "tracker": {"window_seconds": 5, "serving_experiment": ""},
                "checker": {"reference": "windows"},
            }
        }
    )


async def test_two_replicas_of_forty_served_other_inputs_are_named() -> None:
    rng = np.random.default_rng(1)
    async with AgentHarness(Tracker(), Checker(), settings=settings()) as h:
        # Window 1 all alike; windows 2 and 3 with two replicas apart; a report of
        # window 4 closes window 3.
        for end, apart in ((1004.0, set()), (1009.0, APART), (1014.0, APART), (1019.0, set())):
            for report in fleet_reports(end, rng, apart):
                await h.emit(REPORTS, report, source=report["replica"])
            await h.settle()
        await h.wait_for(lambda events: any(e["topic"] == "finding.replicas.serve" for e in events))
        await h.settle()
        findings = [e["payload"] for e in h.events if e["topic"] == "finding.replicas.serve"]
        (finding,) = findings  # once per episode, not once per window
        assert finding["replicas"] == sorted(APART)
        assert finding["of_replicas"] == 40
        assert set(finding["features"]["r03"]) <= set(FEATURES[:10])
        windows = [
            e["payload"]["value"] for e in h.events if e["topic"] == "observation.tracker.serving"
        ]
        clean = windows[0]["replica_deviations"]
        assert (clean["replicas"], clean["features"]) == (40, 64)
        assert not {d["replica"] for d in clean["listed"]} & APART
