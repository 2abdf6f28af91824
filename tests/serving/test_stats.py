"""The counters of a replica and their Prometheus rendering, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from scanflow_agents.serving import prometheus
from scanflow_agents.serving.reporting import envelope, flatten
from scanflow_agents.serving.stats import ServingStats


def test_window_summarises_inputs_predictions_and_labels() -> None:
    stats = ServingStats()
    for seconds in (0.001, 0.002, 0.003, 0.1):
        stats.record_request("/predict", 200, seconds)
    stats.record_request("/predict", 500, 0.004)
    stats.record_predictions(["a", "b", "c"], ["x0"], np.array([[1.0], [2.0], [3.0]]), [1, 1, 7])
    matched, unknown = stats.record_labels([("a", 1), ("b", "2"), ("zz", 3)])

    report = stats.take_window()

    assert (matched, unknown) == (2, ["zz"])
    assert report["requests"] == 5
    assert report["errors"] == 1
    assert report["error_rate"] == 0.2
    assert report["latency_ms"]["p50"] == 3.0
    assert report["features"]["x0"]["mean"] == 2.0
    assert round(report["features"]["x0"]["std"], 6) == round(float(np.std([1, 2, 3])), 6)
    assert report["predictions"]["classes"] == {"1": 2, "7": 1}
    assert report["labels"] == {"received": 3, "matched": 2, "correct": 1, "accuracy": 0.5}
    # Drift tests need values, not means: the window carries a sample of input rows...
    assert report["sample"] == {"columns": ["x0"], "rows": [[1.0], [2.0], [3.0]]}
    # ...and retraining needs labelled inputs: rows joined to their labels.
    assert report["labelled"] == {
        "columns": ["x0"],
        "rows": [[1.0], [2.0]],
        "labels": [1, "2"],
        "predictions": [1, 1],
    }
    # The window was reset: the next report does not count the same requests again.
    assert stats.take_window()["requests"] == 0


def test_prometheus_text_has_counters_and_a_cumulative_histogram() -> None:
    stats = ServingStats()
    stats.record_request("/predict", 200, 0.002)
    stats.record_request("/predict", 200, 0.3)
    stats.record_request("/labels", 200, 0.001)

    text = prometheus.render(
        stats, labels={"workflow": "w", "node": "n", "replica": "n-1"}, model_uri="m", ready=True
    )

    assert (
        'scanflow_requests_total{node="n",replica="n-1",workflow="w",'
        'endpoint="/predict",status="200"} 2' in text
    )
    assert (
        'scanflow_predict_latency_seconds_bucket{node="n",replica="n-1",workflow="w",le="0.0025"} 1'
        in text
    )
    assert (
        'scanflow_predict_latency_seconds_bucket{node="n",replica="n-1",workflow="w",le="+Inf"} 2'
        in text
    )
    assert 'scanflow_model_ready{node="n",replica="n-1",workflow="w"} 1' in text


def test_reports_flatten_to_metric_names_and_wrap_in_an_envelope() -> None:
    payload = {
        "requests": 3,
        "latency_ms": {"p95": 1.5, "p99": None},
        "labels": {"accuracy": None},
        "predictions": {"classes": {"a b?": 2}},
        "window": {"start": 1.0, "seconds": 2.0},
    }

    assert flatten(payload) == {
        "requests": 3.0,
        "latency_ms.p95": 1.5,
        "predictions.classes.a b_": 2.0,
        "window.seconds": 2.0,
    }
    message = envelope("event", "serving/w/n/n-1", payload)
    # What the server sends is what an agent reads: the core's envelope, version 1.
    from scanflow_agents.messages import Envelope

    parsed = Envelope.model_validate(message)
    assert (parsed.v, parsed.kind, parsed.source) == (1, "event", "serving/w/n/n-1")
    assert parsed.payload == payload


def test_input_sample_is_bounded_and_uniform() -> None:
    from scanflow_agents.serving.stats import SAMPLE_ROWS

    stats = ServingStats()
    values = np.arange(20_000, dtype=float)
    ids = [str(i) for i in range(values.size)]
    stats.record_predictions(ids, ["x"], values.reshape(-1, 1), [0] * values.size)
    rows = stats.take_window()["sample"]["rows"]
    assert len(rows) == SAMPLE_ROWS
    # A uniform sample of 0..19999 has its mean near 10000 (not near the last rows).
    assert 8_000 < float(np.mean(rows)) < 12_000


def test_feature_summaries_of_one_row_requests_are_gathered_in_batches() -> None:
    from scanflow_agents.serving.stats import BATCH_ROWS

    stats = ServingStats()
    data = np.random.default_rng(7).normal(3.0, 2.0, size=(BATCH_ROWS * 3 + 17, 64))
    columns = [f"x{i}" for i in range(64)]
    for i, row in enumerate(data[: BATCH_ROWS - 1]):
        stats.record_predictions([f"p{i}"], columns, row.reshape(1, -1), [1])
    # One row per request, as most clients send: nothing computed per request yet...
    assert stats.window.features == {}
    for i, row in enumerate(data[BATCH_ROWS - 1 :], start=BATCH_ROWS - 1):
        stats.record_predictions([f"p{i}"], columns, row.reshape(1, -1), [1])
    # ...and the report still summarises every row, the last partial batch included.
    features = stats.take_window()["features"]
    assert list(features) == columns
    for i, name in enumerate(columns):
        assert features[name]["count"] == len(data)
        assert features[name]["mean"] == pytest.approx(data[:, i].mean())
        assert features[name]["std"] == pytest.approx(data[:, i].std())
        assert features[name]["min"] == data[:, i].min()
        assert features[name]["max"] == data[:, i].max()


def test_a_change_of_columns_keeps_each_feature_apart() -> None:
    stats = ServingStats()
    stats.record_predictions(["a"], ["x", "y"], np.array([[1.0, 10.0]]), [0])
    stats.record_predictions(["b"], ["x"], np.array([[3.0]]), [0])
    stats.record_predictions(["c"], ["x", "y"], np.array([[5.0, 20.0]]), [0])
    stats.record_labels([("a", 0), ("b", 0)])

    report = stats.take_window()

    assert report["features"]["x"]["count"] == 3
    assert report["features"]["x"]["mean"] == 3.0
    assert report["features"]["y"]["count"] == 2
    assert report["features"]["y"]["max"] == 20.0
    assert report["labelled"]["rows"] == [[1.0, 10.0], [3.0]]
