"""The Prometheus text exposition of one replica's counters.

Written by hand rather than with prometheus_client: a dozen lines of format
are cheaper than a dependency with a process-global registry, which would also
make two servers in one test process share their counters.
"""

from __future__ import annotations

from scanflow_agents.serving.stats import LATENCY_BUCKETS, ServingStats


def render(stats: ServingStats, *, labels: dict[str, str], model_uri: str, ready: bool) -> str:
    """Render the counters of ``stats`` in the Prometheus text format (0.0.4).

    Args:
        stats: The replica's counters.
        labels: Constant labels put on every sample (workflow, node, replica).
        model_uri: The model this replica serves, exposed as an info metric.
        ready: Whether the model is loaded.
    """
    base = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))

    def lbl(**extra: str) -> str:
        parts = [base] if base else []
        parts += [f'{k}="{_escape(v)}"' for k, v in extra.items()]
        return "{" + ",".join(parts) + "}"

    out = [
        "# HELP scanflow_model_info The model this replica serves.",
        "# TYPE scanflow_model_info gauge",
        f"scanflow_model_info{lbl(model_uri=model_uri)} 1",
        "# HELP scanflow_model_ready 1 when the model is loaded and requests are served.",
        "# TYPE scanflow_model_ready gauge",
        f"scanflow_model_ready{lbl()} {int(ready)}",
        "# HELP scanflow_requests_total HTTP requests by endpoint and status.",
        "# TYPE scanflow_requests_total counter",
    ]
    for (endpoint, status), count in sorted(stats.requests.items()):
        out.append(f"scanflow_requests_total{lbl(endpoint=endpoint, status=str(status))} {count}")
    out += [
        "# HELP scanflow_predict_latency_seconds Latency of /predict requests.",
        "# TYPE scanflow_predict_latency_seconds histogram",
    ]
    cumulative = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), stats.buckets, strict=True):
        cumulative += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(f"scanflow_predict_latency_seconds_bucket{lbl(le=le)} {cumulative}")
    out += [
        f"scanflow_predict_latency_seconds_sum{lbl()} {stats.latency_sum}",
        f"scanflow_predict_latency_seconds_count{lbl()} {stats.latency_count}",
        "# HELP scanflow_predict_errors_total /predict requests that failed on the server side.",
        "# TYPE scanflow_predict_errors_total counter",
        f"scanflow_predict_errors_total{lbl()} {stats.errors_total}",
        "# HELP scanflow_predictions_total Rows predicted.",
        "# TYPE scanflow_predictions_total counter",
        f"scanflow_predictions_total{lbl()} {stats.predictions_total}",
        "# HELP scanflow_labels_total Labels received, and whether they matched a prediction.",
        "# TYPE scanflow_labels_total counter",
        f"scanflow_labels_total{lbl(matched='true')} {stats.labels_matched_total}",
        f"scanflow_labels_total{lbl(matched='false')} "
        f"{stats.labels_total - stats.labels_matched_total}",
    ]
    return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
