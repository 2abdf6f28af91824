"""The checker: input drift per served model, error-rate drift, SLO findings."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scanflow_agents.builtin.checker import Checker, CheckerSettings
from scanflow_agents.builtin.tracker import Tracker
from sklearn.datasets import load_digits

from scanflow_agents import Settings
from scanflow_agents.knowledge import KnowledgeClient, MlflowServer, ModelRegistry
from scanflow_agents.replaying import replay
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import AgentHarness, assert_replays

SERVING = "observation.tracker.serving"
DIGITS = load_digits().data  # 1797 images of 8x8 pixels, values 0-16: bundled, no download
COLUMNS = [f"pixel_{i}" for i in range(64)]
# A shuffled split, as a training step makes one: the file is ordered by writer.
TRAIN, SERVED = np.split(DIGITS[np.random.default_rng(0).permutation(len(DIGITS))], [1000])
ROTATED = np.rot90(DIGITS.reshape(-1, 8, 8), axes=(1, 2)).reshape(-1, 64)


class Feed:
    """Sends the checker tracker windows, one after the other, and waits for each to be judged."""

    def __init__(self, h: AgentHarness, seed: int = 0) -> None:
        self.h = h
        self.rng = np.random.default_rng(seed)
        self.sent = 0
        self.judged = 0

    def rows(self, data: np.ndarray, n: int = 200) -> list[list[float]]:
        picked: list[list[float]] = data[self.rng.integers(0, len(data), n)].tolist()
        return picked

    async def window(
        self,
        rows: list[list[float]] | None = None,
        *,
        uri: str = "models:/digits/1",
        workflow: str = "serve",
        requests: int = 100,
        errors: int = 0,
        p95: float = 20.0,
        matched: int = 0,
        correct: int = 0,
        probe: float | None = None,
        objectives: dict[str, float] | None = None,
    ) -> None:
        start = 1000.0 + 5 * self.sent
        rows = rows if rows is not None else []
        value = {
            "workflow": workflow,
            "node": "model",
            "window": {"start": start, "end": start + 5, "seconds": 5.0, "reports": 2},
            "replicas": 2,
            "replica_ids": ["a", "b"],
            "model_uris": [uri],
            "requests": requests,
            "rps": requests / 5,
            "errors": errors,
            "error_rate": errors / requests if requests else 0.0,
            "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 2},
            "labels": {"received": matched, "matched": matched, "correct": correct},
            "accuracy": correct / matched if matched else None,
            "by_model": {uri: {"requests": requests, "matched": matched, "correct": correct}},
            "sample": {"columns": COLUMNS, "rows": rows, "model_index": [0] * len(rows)},
            "probe_ms": probe,
            "objectives": objectives or {},
        }
        await self.h.emit(SERVING, {"value": value, "trigger": "event"}, source="tracker")
        self.sent += 1
        if requests:
            # The SLO rule runs last on each window: its event says the window was judged.
            self.judged += 1
            await self.h.wait_for(lambda _: len(topics(self.h, "finding.slo.")) >= self.judged)


def topics(h: AgentHarness, prefix: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in h.events if e["topic"].startswith(prefix)]


def decisions(h: AgentHarness, action: str) -> list[dict[str, Any]]:
    return [
        e["payload"] for e in h.records("decision", "checker") if e["payload"]["action"] == action
    ]


def settings_with(checker: dict[str, Any], mlflow: MlflowServer | None = None) -> Settings:
    update: dict[str, Any] = {"agents": {"checker": checker}}
    if mlflow is not None:
        update["mlflow"] = MlflowSettings(tracking_uri=mlflow.url)
    return Settings.defaults().model_copy(update=update)


async def test_clean_windows_make_no_finding_and_drift_makes_one_per_episode() -> None:
    settings = settings_with({"reference": "windows", "reference_windows": 3})
    async with AgentHarness(Checker(), settings=settings) as h:
        feed = Feed(h)
        for _ in range(3 + 40):  # 3 windows make the reference, 40 are tested
            await feed.window(feed.rows(DIGITS))
        assert topics(h, "finding.drift.") == []
        assert decisions(h, "drift") == []

        await feed.window(feed.rows(ROTATED))
        assert topics(h, "finding.drift.") == []  # one drifted window is not enough
        for _ in range(4):
            await feed.window(feed.rows(ROTATED))
        [finding] = topics(h, "finding.drift.serve")  # once, not once per window
        assert finding["workflow"] == "serve"
        assert finding["model_uri"] == "models:/digits/1"
        assert (finding["test"], finding["alpha"], finding["correction"]) == ("ks", 0.01, "holm")
        assert finding["windows_in_row"] == 2
        assert len(finding["features_moved"]) >= 20
        assert finding["reference"]["source"].startswith("the first 3 window(s)")
        evidence = finding["evidence"]["features"]
        assert [f["name"] for f in evidence] == finding["features_moved"]
        assert all(f["p_adjusted"] < 0.01 and f["p_adjusted"] >= f["p_value"] for f in evidence)
        assert max(f["psi"] for f in evidence) > 0.25
        [decision] = decisions(h, "drift")
        assert decision["evidence"]["findings"][0]["features_moved"] == finding["features_moved"]

        # A clean window ends the episode; drift again is a new finding.
        await feed.window(feed.rows(DIGITS))
        for _ in range(2):
            await feed.window(feed.rows(ROTATED))
        assert len(topics(h, "finding.drift.serve")) == 2


async def test_the_checker_replays_its_history_and_a_later_alarm_differs_as_stated(
    bus: str | None,
) -> None:
    """Replay (docs/guides/shadow.md) of the built-in checker, on a history it recorded."""
    settings = settings_with({"reference": "windows", "reference_windows": 3})
    async with AgentHarness(Checker(), settings=settings, nats_url=bus) as h:
        feed = Feed(h)
        for _ in range(3 + 5):
            await feed.window(feed.rows(DIGITS))
        for _ in range(4):  # drift found at the 2nd window in a row, as configured
            await feed.window(feed.rows(ROTATED))
        await h.settle()
        history = await h.client.history(kinds=None)
    recorded = [r for r in history if r["kind"] == "decision" and r["name"] == "drift"]
    assert len(recorded) == 1

    # Unchanged, it decides as it did, cause by cause (the SLO reports included).
    same = await assert_replays(Checker(settings=settings), history)
    assert same.counts()["same"] == len([r for r in history if r["kind"] == "decision"])
    assert [topic for topic, _ in same.emitted].count("finding.drift.serve") == 1

    # Three windows in a row instead of two: the alarm moves one window later.
    later = settings_with({"reference": "windows", "reference_windows": 3, "consecutive": 3})
    moved = await replay(Checker(settings=later), history)
    assert moved.counts() == {
        "same": len([r for r in history if r["kind"] == "decision"]) - 1,
        "changed": 0,
        "removed": 1,
        "added": 1,
    }
    removed, added = sorted(moved.differences, key=lambda row: row.difference.time)
    assert (removed.status, added.status) == ("removed", "added")
    assert removed.difference.cause == recorded[0]["payload"]["trigger"]["event"]
    assert added.difference.time > removed.difference.time
    assert moved.failures == {}


async def test_each_model_uri_has_its_own_reference() -> None:
    settings = settings_with({"reference": "windows", "reference_windows": 2})
    async with AgentHarness(Checker(), settings=settings) as h:
        feed = Feed(h, seed=1)
        for _ in range(4):
            await feed.window(feed.rows(DIGITS))
        # A new model trained on rotated digits: its own first windows are its reference.
        for _ in range(8):
            await feed.window(feed.rows(ROTATED), uri="models:/digits/2")
        assert topics(h, "finding.drift.") == []
        for _ in range(2):
            await feed.window(feed.rows(DIGITS), uri="models:/digits/2")
        [finding] = topics(h, "finding.drift.serve")
        assert finding["model_uri"] == "models:/digits/2"


async def test_a_rise_of_the_error_rate_is_a_performance_finding() -> None:
    async with AgentHarness(Checker(), settings=settings_with({})) as h:
        feed = Feed(h)
        for _ in range(30):  # 5 % wrong
            await feed.window(matched=200, correct=190)
        assert topics(h, "finding.performance.") == []
        for _ in range(6):  # 40 % wrong
            await feed.window(matched=200, correct=120)
        [finding] = topics(h, "finding.performance.serve")
        assert finding["detector"] == "adwin"
        assert finding["model_uri"] == "models:/digits/1"
        assert finding["error_rate_before"] < 0.1
        assert finding["error_rate_now"] == pytest.approx(0.4)
        assert finding["samples"] > 0
        [decision] = decisions(h, "performance-drift")
        assert "rose from" in decision["reason"]

        # A new model starts with a fresh detector: its steady 40 % is no rise.
        for _ in range(10):
            await feed.window(matched=200, correct=120, uri="models:/digits/2")
        assert len(topics(h, "finding.performance.")) == 1


async def test_every_window_with_traffic_has_an_slo_finding(nats_url: str) -> None:
    settings = settings_with({"slo": {"fast": {"latency_p95_ms": 10, "error_rate": 0.1}}})
    async with AgentHarness(Checker(), nats_url=nats_url, settings=settings) as h:
        feed = Feed(h)
        await feed.window(p95=150.0)  # default objective: 100 ms
        await feed.window(p95=20.0)
        await feed.window(p95=20.0, workflow="fast")
        await feed.window(p95=5.0, errors=5, workflow="fast")  # 5 % errors, objective 10 %
        await feed.window(p95=5.0, errors=20, workflow="fast")
        await feed.window(requests=0)  # no traffic: nothing to judge
        await h.settle()

        slo = topics(h, "finding.slo.")
        assert [f["breached"] for f in slo] == [True, False, True, False, True]
        assert [f["breaches"] for f in slo] == [["latency"], [], ["latency"], [], ["errors"]]
        first = slo[0]
        assert (first["workflow"], first["node"]) == ("serve", "model")
        assert (first["latency_p95_ms"], first["objective_ms"]) == (150.0, 100.0)
        assert (first["error_rate"], first["error_objective"]) == (0.0, 0.01)
        assert (first["rps"], first["replicas"]) == (20.0, 2)
        assert slo[2]["objective_ms"] == 10.0
        assert slo[4]["error_rate"] == 0.2
        breaches = decisions(h, "slo-breach")
        assert len(breaches) == 3  # the all-clear windows decide nothing
        assert "p95 150.0 ms > 100 ms" in breaches[0]["reason"]


async def test_the_services_own_objective_is_enforced_as_clients_feel_it() -> None:
    """The objective comes from the application (through the replicas' reports), the
    latency includes what the probe saw beyond the handler, and small windows never
    breach; the checker's own settings override the service's objective."""
    own = {"latency_p95_ms": 30.0}
    async with AgentHarness(Checker(), settings=settings_with({})) as h:
        feed = Feed(h)
        await feed.window(p95=20.0, objectives=own)
        await feed.window(p95=20.0, probe=15.0, objectives=own)  # 35 ms as clients feel it
        await feed.window(p95=500.0, requests=20, objectives=own)  # too few to judge
        await h.settle()
        slo = topics(h, "finding.slo.")
        assert [f["breached"] for f in slo] == [False, True, False]
        assert [f["objective_ms"] for f in slo] == [30.0] * 3
        assert (slo[1]["latency_p95_ms"], slo[1]["server_p95_ms"], slo[1]["probe_ms"]) == (
            35.0,
            20.0,
            15.0,
        )
    overriding = settings_with({"slo": {"serve": {"latency_p95_ms": 100}}})
    async with AgentHarness(Checker(), settings=overriding) as h:
        await Feed(h).window(p95=20.0, probe=15.0, objectives=own)
        await h.settle()
        [finding] = topics(h, "finding.slo.")
        assert (finding["breached"], finding["objective_ms"]) == (False, 100.0)


async def test_the_reference_is_the_served_model_versions_training_sample(
    nats_url: str, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    model = f"digits-{uuid.uuid4().hex[:8]}"
    with_reference = await asyncio.to_thread(_training_run, mlflow_server.url, model, TRAIN)
    without = await asyncio.to_thread(_training_run, mlflow_server.url, model, None)
    async with KnowledgeClient(MlflowSettings(tracking_uri=mlflow_server.url)) as client:
        registry = ModelRegistry(client)
        for run_id in (with_reference, without):
            await registry.create_version(model, f"runs:/{run_id}/model", run_id=run_id)
        await registry.set_alias(model, "production", "1")

    settings = settings_with({}, mlflow_server)
    async with AgentHarness(Checker(), nats_url=nats_url, settings=settings) as h:
        feed = Feed(h, seed=2)
        for _ in range(10):  # digits the reference does not hold, from the same population
            await feed.window(feed.rows(SERVED), uri=f"models:/{model}@production")
        assert topics(h, "finding.drift.") == []
        for _ in range(2):  # tested at once: no windows are spent on a reference
            await feed.window(feed.rows(ROTATED), uri=f"models:/{model}@production")
        [finding] = topics(h, "finding.drift.")
        source = finding["reference"]["source"]
        assert source == f"model '{model}' version 1: reference.npz of run {with_reference}"
        assert finding["reference"]["rows"] == 1000

        # Version 2's run has no reference: its first windows make one.
        for _ in range(3 + 2):
            await feed.window(feed.rows(ROTATED), uri=f"models:/{model}/2")
        assert len(topics(h, "finding.drift.")) == 1
        checker = h.agents["checker"]
        assert isinstance(checker, Checker)
        assert checker.baselines[f"models:/{model}/2"].source.startswith("the first 3 window(s)")
        history = await h.client.history(kinds=None)

    # Replayed on what it recorded, reading the model's reference from MLflow (read
    # only): decision for decision. Without MLflow no window can be tested (each
    # model's reference is looked up there first), and the replay counts them all.
    async with KnowledgeClient(settings.mlflow, read_only=True) as knowledge:
        same = await assert_replays(Checker(settings=settings), history, knowledge=knowledge)
    assert same.failures == {}
    assert [topic for topic, _ in same.emitted].count("finding.drift.serve") == 1
    blind = await replay(Checker(settings=settings), history)
    assert blind.failures == {"drift": 12 + 5}
    assert blind.counts()["removed"] == 1

    # The same from the command line, on an exported history file.
    exported = tmp_path / "history.jsonl"
    exported.write_text("".join(json.dumps(record) + "\n" for record in history))
    command = [sys.executable, "-m", "scanflow_agents.runtime", "replay"]
    command += ["scanflow_agents.builtin.checker:Checker", "--file", str(exported)]
    env = {**os.environ, "SCANFLOW_MLFLOW__TRACKING_URI": mlflow_server.url}
    for flags, failed in (["--read-mlflow"], {}), ([], {"drift": 12 + 5}):
        done = await asyncio.to_thread(
            subprocess.run, [*command, *flags, "--json"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["failures"] == failed, flags


async def test_the_tracker_windows_reach_the_checker() -> None:
    settings = settings_with({"reference": "windows", "reference_windows": 1, "min_rows": 10})
    settings.agents["tracker"] = {"window_seconds": 5, "serving_experiment": ""}  # no MLflow
    async with AgentHarness(Tracker(), Checker(), settings=settings) as h:
        rng = np.random.default_rng(4)
        for i, data in enumerate((DIGITS, DIGITS, ROTATED, ROTATED, DIGITS)):
            for replica, p95 in (("a", 20.0), ("b", 400.0)):
                report = {
                    "workflow": "serve",
                    "node": "model",
                    "replica": replica,
                    "model_uri": "models:/digits/1",
                    "window": {"end": 1001.0 + 5 * i},
                    "requests": 50,
                    "errors": 0,
                    "latency_ms": {"p95": p95},
                    "labels": {"matched": 0, "correct": 0},
                    "sample": {
                        "columns": COLUMNS,
                        "rows": data[rng.integers(0, len(data), 100)].tolist(),
                    },
                }
                await h.emit("telemetry.serving.serve.model", report, source=replica)
        # Four windows closed (the fifth is open): the first is the reference.
        await h.wait_for(lambda _: len(topics(h, "finding.slo.serve")) == 4)
        slo = topics(h, "finding.slo.serve")
        assert [f["latency_p95_ms"] for f in slo] == [210.0] * 4  # (50*20 + 50*400) / 100
        assert all(f["breached"] and f["replicas"] == 2 and f["rps"] == 20.0 for f in slo)
        [drift] = topics(h, "finding.drift.serve")
        assert drift["window"]["start"] == 1015.0  # the second rotated window


def test_settings_take_objectives_as_json_text() -> None:
    options = CheckerSettings.model_validate(
        {"slo": '{"serve": {"latency_p95_ms": 50}}', "alpha": "0.05"}
    )
    assert options.objectives("serve") == (50.0, 0.01)
    assert options.objectives("serve", {"latency_p95_ms": 30}) == (50.0, 0.01)  # overridden
    assert options.objectives("other", {"latency_p95_ms": 30}) == (30.0, 0.01)  # the service's
    assert options.objectives("other") == (100.0, 0.01)
    assert options.alpha == 0.05
    with pytest.raises(ValueError, match="reference"):
        CheckerSettings.model_validate({"reference": "somewhere"})


# -- blocking MLflow helpers (run in threads) ----------------------------------------------


def _training_run(tracking_uri: str, experiment: str, reference: np.ndarray | None) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = str(client.create_run(experiment_id).info.run_id)
    if reference is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "reference.npz"
            np.savez_compressed(path, x=reference)
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id
