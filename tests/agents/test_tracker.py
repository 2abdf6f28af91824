"""The tracker: serving windows over replicas, the dataset actuator, finished trainings."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scanflow_agents.builtin.tracker import Tracker, TrackerSettings
from scanflow_agents.builtin.tracker.windows import Windows

from scanflow_agents import NotFound, Settings
from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import AgentHarness

SERVING = "observation.tracker.serving"
# Where model servers report (telemetry topics), for two workflows.
REPORTS = "telemetry.serving.serve.model"
OTHER_REPORTS = "telemetry.serving.other.model"


def report(
    replica: str,
    end: float,
    *,
    requests: int = 10,
    errors: int = 0,
    p95: float = 20.0,
    matched: int = 0,
    correct: int = 0,
    rows: list[list[float]] | None = None,
    labelled: tuple[list[list[float]], list[Any]] | None = None,
    model_uri: str = "models:/digits/1",
    workflow: str = "serve",
) -> dict[str, Any]:
    """A serving report as a model-server replica sends it (the fields the tracker reads)."""
    rows = rows if rows is not None else [[float(end), 1.0]]
    x, y = labelled if labelled is not None else ([], [])
    return {
        "workflow": workflow,
        "node": "model",
        "replica": replica,
        "model_uri": model_uri,
        "sequence": 1,
        "window": {"start": end - 1.0, "end": end, "seconds": 1.0},
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else 0.0,
        "rows": requests,
        "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 2, "mean": p95 / 2, "max": p95},
        "labels": {"received": matched, "matched": matched, "correct": correct},
        "sample": {"columns": ["a", "b"], "rows": rows},
        "labelled": {"columns": ["a", "b"], "rows": x, "labels": y, "predictions": y},
    }


def windows(h: AgentHarness) -> list[dict[str, Any]]:
    return [e["payload"]["value"] for e in h.events if e["topic"] == SERVING]


def settings_with(tracker: dict[str, Any], mlflow: MlflowServer | None = None) -> Settings:
    if mlflow is None:
        tracker = {"serving_experiment": "", **tracker}  # no MLflow to log windows to
    update: dict[str, Any] = {"agents": {"tracker": tracker}}
    if mlflow is not None:
        update["mlflow"] = MlflowSettings(tracking_uri=mlflow.url)
    return Settings.defaults().model_copy(update=update)


async def test_a_window_adds_replicas_up_and_closes_at_the_first_later_report() -> None:
    settings = settings_with({"window_seconds": 5})
    async with AgentHarness(Tracker(settings=settings), settings=settings) as h:
        # Window [1000, 1005): two replicas, three reports; one replica is slower.
        await h.emit(
            REPORTS, report("a", 1001.0, requests=30, p95=10.0, matched=10, correct=9), source="a"
        )
        await h.emit(
            REPORTS,
            report("b", 1002.0, requests=10, errors=1, p95=50.0, matched=10, correct=5),
            source="b",
        )
        await h.emit(REPORTS, report("a", 1004.9, requests=20, p95=10.0), source="a")
        await h.settle()
        assert windows(h) == []  # still open: no report past its end yet
        await h.emit(REPORTS, report("b", 1005.1, requests=7), source="b")
        await h.wait_for(lambda _: len(windows(h)) == 1)

        [w] = windows(h)
        assert (w["workflow"], w["node"]) == ("serve", "model")
        assert w["window"] == {"start": 1000.0, "end": 1005.0, "seconds": 5.0, "reports": 3}
        assert (w["replicas"], w["replica_ids"]) == (2, ["a", "b"])
        assert w["model_uris"] == ["models:/digits/1"]
        assert (w["requests"], w["errors"]) == (60, 1)
        assert w["rps"] == pytest.approx(12.0)
        assert w["error_rate"] == pytest.approx(1 / 60)
        # Request-weighted: (30*10 + 10*50 + 20*10) / 60.
        assert w["latency_ms"]["p95"] == pytest.approx(1000 / 60)
        assert w["labels"] == {"received": 20, "matched": 20, "correct": 14}
        assert w["accuracy"] == pytest.approx(0.7)
        assert w["by_model"] == {"models:/digits/1": {"requests": 60, "matched": 20, "correct": 14}}
        assert [row[0] for row in w["sample"]["rows"]] == [1001.0, 1002.0, 1004.9]
        assert w["sample"]["columns"] == ["a", "b"]

        # The closing report opened the next window; a report far later closes it alone.
        await h.emit(REPORTS, report("a", 1031.0), source="a")
        await h.wait_for(lambda _: len(windows(h)) == 2)
        second = windows(h)[1]
        assert second["window"]["start"] == 1005.0
        assert (second["requests"], second["replica_ids"]) == (7, ["b"])


async def test_a_model_is_told_by_the_version_its_replicas_loaded() -> None:
    settings = settings_with({"window_seconds": 5})
    alias = "models:/digits@production"
    async with AgentHarness(Tracker(settings=settings), settings=settings) as h:
        # Both replicas were deployed with the alias, before and after it moved.
        old = report("a", 1001.0, model_uri=alias) | {"model_version_uri": "models:/digits/1"}
        new = report("b", 1002.0, model_uri=alias) | {"model_version_uri": "models:/digits/2"}
        for replica in (old, new):
            await h.emit(REPORTS, replica, source=replica["replica"])
        await h.emit(REPORTS, report("a", 1006.0), source="a")
        await h.wait_for(lambda _: len(windows(h)) == 1)

    assert windows(h)[0]["model_uris"] == ["models:/digits/1", "models:/digits/2"]


async def test_windows_are_kept_per_workflow_and_samples_are_bounded() -> None:
    settings = settings_with({"window_seconds": 2, "sample_rows": 100})
    async with AgentHarness(Tracker(settings=settings), settings=settings) as h:
        rows = [[float(i), 0.0] for i in range(80)]
        for replica in ("a", "b", "c"):
            await h.emit(REPORTS, report(replica, 10.5, rows=rows), source=replica)
        await h.emit(OTHER_REPORTS, report("x", 10.5, workflow="other"), source="x")
        await h.emit(REPORTS, report("a", 12.5, rows=[]), source="a")
        await h.wait_for(lambda _: len(windows(h)) == 1)
        await h.settle()

        [w] = windows(h)  # the other workflow's window is still open
        assert w["workflow"] == "serve"
        assert len(w["sample"]["rows"]) == 100  # 240 rows subsampled to sample_rows
        assert w["sample"]["model_index"] == [0] * 100


def test_a_fleet_reporting_into_one_window_keeps_a_bounded_uniform_sample() -> None:
    """1,000 replicas of 256 rows each: the window keeps its sample size, and every
    replica's rows the same chance (the first to report are not favoured)."""
    windows = Windows(seconds=10, sample_rows=2_000, seed=7)
    for number in range(1_000):
        rows = [[float(number), 0.0]] * 256
        windows.add(report(f"r{number}", 1005.0, rows=rows), at=1005.0)
    (window,) = windows.open.values()
    assert (len(window.rows), window.rows_seen) == (2_000, 256_000)
    closed = windows.add(report("late", 1011.0), at=1011.0)
    assert closed is not None
    first_half = sum(1 for row in closed["sample"]["rows"] if row[0] < 500)
    assert 900 <= first_half <= 1_100  # half the rows came from the first 500 replicas


async def test_the_dataset_actuator_writes_recent_labelled_rows_to_mlflow(
    nats_url: str, mlflow_server: MlflowServer
) -> None:
    settings = settings_with({"recent_rows": 50}, mlflow_server)
    async with AgentHarness(Tracker(settings=settings), nats_url=nats_url, settings=settings) as h:
        with pytest.raises(NotFound, match="no labelled rows of serve/model"):
            await h.call("tracker", "dataset", workflow="serve")

        for i in range(4):  # 4 x 20 labelled rows; only the newest 50 are kept
            x = [[float(i), float(j)] for j in range(20)]
            model = "models:/digits/1" if i < 2 else "models:/digits/2"
            await h.emit(
                REPORTS,
                report("a", 100.0 + i, labelled=(x, [j % 10 for j in range(20)]), model_uri=model),
                source="a",
            )
        await h.settle()

        result = await h.call("tracker", "dataset", workflow="serve", node="model", limit=30)
        assert result["rows"] == 30
        assert result["uri"] == f"runs:/{result['run_id']}/recent.npz"
        rows, labels = await asyncio.to_thread(_download, result["uri"], mlflow_server.url)
        assert rows.shape == (30, 2)
        assert rows.dtype == np.float64
        assert labels.dtype.kind == "i"
        assert rows[-1].tolist() == [3.0, 19.0]  # the newest rows
        tags = await asyncio.to_thread(_tags, result["run_id"], mlflow_server.url)
        assert (tags["scanflow.workflow"], tags["scanflow.node"]) == ("serve", "model")

        since = await h.call("tracker", "dataset", workflow="serve", since_model="models:/digits/2")
        assert since["rows"] == 40
        assert since["model_uris"] == ["models:/digits/2"]
        with pytest.raises(NotFound, match="predicted by 'models:/digits/9'"):
            await h.call("tracker", "dataset", workflow="serve", since_model="models:/digits/9")


async def test_closed_windows_go_to_mlflow_as_a_dozen_metrics_whatever_the_replicas(
    nats_url: str, mlflow_server: MlflowServer
) -> None:
    experiment = f"serving-{uuid.uuid4().hex[:8]}"
    settings = settings_with({"window_seconds": 5, "serving_experiment": experiment}, mlflow_server)
    async with AgentHarness(Tracker(settings=settings), nats_url=nats_url, settings=settings) as h:
        for end in (1001.0, 1006.0, 1011.0):  # two windows close: [1000, 1005) and [1005, 1010)
            for replica in range(40):
                await h.emit(REPORTS, report(f"r{replica}", end, requests=10), source="r")
        await h.wait_for(lambda _: len(windows(h)) == 2)
        await h.settle()

    runs = await asyncio.to_thread(_serving_runs, experiment, mlflow_server.url)
    (run,) = runs
    assert run.data.tags["scanflow.workflow"] == "serve"
    assert 0 < len(run.data.metrics) <= 12  # not 40 replicas' worth of numbers
    history = await asyncio.to_thread(_history, run.info.run_id, "requests", mlflow_server.url)
    assert [(m.step, m.value) for m in history] == [(200, 400.0), (201, 400.0)]
    replicas = await asyncio.to_thread(_history, run.info.run_id, "replicas", mlflow_server.url)
    assert [m.value for m in replicas] == [40.0, 40.0]


def _serving_runs(experiment: str, url: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return list(client.search_runs([found.experiment_id]))


def _history(run_id: str, key: str, url: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=url).get_metric_history(run_id, key)
    return sorted(history, key=lambda m: m.step)


async def test_the_trainings_sensor_reports_each_finished_run_once(
    nats_url: str, mlflow_server: MlflowServer
) -> None:
    experiment = f"train-{uuid.uuid4().hex[:8]}"
    settings = settings_with({"training_experiments": [experiment]}, mlflow_server)
    tracker = Tracker(settings=settings)
    assert tracker.sensors["trainings"].reads is not None
    assert tracker.sensors["trainings"].reads.experiments == (experiment,)

    first = await asyncio.to_thread(_run, mlflow_server.url, experiment, finish=True)
    running = await asyncio.to_thread(_run, mlflow_server.url, experiment, finish=False)
    async with AgentHarness(tracker, nats_url=nats_url, settings=settings) as h:
        seen = await h.run_sensor("tracker", "trainings")
        assert seen is not None
        [training] = seen.value
        assert training["run_id"] == first
        assert training["workflow"] == "train"
        assert training["node"] == "train"
        assert training["metrics"] == {"accuracy": 0.9}
        assert training["params"] == {"C": "1.0"}
        assert await h.run_sensor("tracker", "trainings") is None  # nothing new

        await asyncio.to_thread(_finish, mlflow_server.url, running)
        later = await h.run_sensor("tracker", "trainings")
        assert later is not None
        assert [t["run_id"] for t in later.value] == [running]
        assert later.value[0]["metrics"] == {"accuracy": 0.95}  # logged after the first read
        assert await h.run_sensor("tracker", "trainings") is None
        await h.settle()
        published = [e for e in h.events if e["topic"] == "observation.tracker.trainings"]
        assert len(published) == 2


def test_settings_read_lists_from_the_environment() -> None:
    options = TrackerSettings.model_validate(
        {"training_experiments": "digits, fraud", "window_seconds": "10"}
    )
    assert options.training_experiments == ["digits", "fraud"]
    assert options.window_seconds == 10.0
    with pytest.raises(ValueError, match="window_seconds"):
        TrackerSettings.model_validate({"window_seconds": 0})


# -- blocking MLflow helpers (run in threads) ----------------------------------------------


def _download(uri: str, tracking_uri: str) -> tuple[np.ndarray, np.ndarray]:
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as folder:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, tracking_uri=tracking_uri, dst_path=folder
        )
        with np.load(Path(path)) as data:
            return data["x"], data["y"]


def _tags(run_id: str, tracking_uri: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags)


def _run(tracking_uri: str, experiment: str, *, finish: bool) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id, tags={"scanflow.workflow": "train", "scanflow.node": "train"}
    )
    client.log_param(run.info.run_id, "C", "1.0")
    if finish:
        client.log_metric(run.info.run_id, "accuracy", 0.9)
        client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def _finish(tracking_uri: str, run_id: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_metric(run_id, "accuracy", 0.95)
    client.set_terminated(run_id)


def test_recent_rows_since_a_time() -> None:
    from scanflow_agents.builtin.tracker.datasets import RecentRows

    recent = RecentRows(limit=100)
    for end, value in ((10.0, 0.0), (20.0, 1.0), (30.0, 2.0)):
        recent.add(
            {
                "workflow": "serve",
                "node": "model",
                "model_uri": "m",
                "window": {"end": end},
                "labelled": {"rows": [[value]], "labels": [int(value)], "predictions": [0]},
            }
        )
    assert [row.x for row in recent.select("serve", "model", 10, since=20.0)] == [[1.0], [2.0]]
    with pytest.raises(LookupError, match="since"):
        recent.select("serve", "model", 10, since=31.0)


def test_recent_rows_since_a_model_by_either_of_its_names() -> None:
    from scanflow_agents.builtin.tracker.datasets import RecentRows

    recent = RecentRows(limit=100)
    for end, version in ((10.0, "models:/digits/1"), (20.0, "models:/digits/2")):
        recent.add(
            {
                "workflow": "serve",
                "node": "model",
                "model_uri": "models:/digits@production",
                "model_version_uri": version,
                "window": {"end": end},
                "labelled": {"rows": [[end]], "labels": [1], "predictions": [1]},
            }
        )

    rows = recent.select("serve", "model", 10, since_model="models:/digits/2")
    assert [(row.x, row.served) for row in rows] == [([20.0], "models:/digits/2")]
    # As deployed, the alias names both: rows from the first one it predicted on.
    assert len(recent.select("serve", "model", 10, since_model="models:/digits@production")) == 2
    with pytest.raises(LookupError, match="models:/digits/1, models:/digits/2"):
        recent.select("serve", "model", 10, since_model="models:/digits/3")
