"""The demo's figures, computed from what happened: the audit trail and the request records.

Nothing here is a fixed number. Times come from the recorded events (the
agents' own clocks on this machine) and the requests' send times; accuracies
from the labels of the requests and from a held-out set that was never sent,
judged as it was before the drift and as the drift made it. A figure that did
not happen (no drift part, no detection) is ``None``, printed as "-", never a
made-up value.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

from scanflow_agents.runtime.demo.view import QUERIES
from scanflow_agents.runtime.demo.watching import epoch, replicas_of

DEMO_CALLER = "demo"


def topic_of(record: dict[str, Any]) -> str:
    """The event topic of a history record (recorded kinds keep agent and handler apart)."""
    if record["kind"] in ("observation", "decision", "action"):
        return f"{record['kind']}.{record['agent']}.{record['name']}"
    return str(record["name"])


def _first(history: list[dict[str, Any]], since: float | None, test: Any) -> float | None:
    if since is None:
        return None
    times = [epoch(r["time"]) for r in history if test(r) and epoch(r["time"]) >= since]
    return min(times) if times else None


def _action(record: dict[str, Any], agent: str, actuator: str) -> bool:
    return (
        record["kind"] == "action"
        and record["agent"] == agent
        and record["name"] == actuator
        and bool(record["payload"].get("ok"))
    )


def _is_drift(record: dict[str, Any]) -> bool:
    topic = topic_of(record)
    if topic.startswith("finding.drift"):
        return True
    action = str(record["payload"].get("action", "")) if record["kind"] == "decision" else ""
    return record["agent"] == "checker" and "drift" in action


def _is_breach(record: dict[str, Any]) -> bool:
    return topic_of(record).startswith("finding.slo") and bool(record["payload"].get("breached"))


def _is_scale_out(record: dict[str, Any]) -> bool:
    if not _action(record, "planner", "scale"):
        return False
    change = replicas_of(record["payload"])
    return change is not None and change[1] > change[0]


def _is_scale_in(record: dict[str, Any]) -> bool:
    if not _action(record, "planner", "scale"):
        return False
    change = replicas_of(record["payload"])
    return change is not None and change[1] < change[0]


def direction_changes(history: list[dict[str, Any]]) -> int:
    """How often scaling turned around (out after in, or in after out): flapping."""
    directions = [
        change[1] > change[0]
        for record in history
        if _action(record, "planner", "scale")
        and (change := replicas_of(record["payload"])) is not None
        and change[1] != change[0]
    ]
    return sum(1 for a, b in itertools.pairwise(directions) if a != b)


def redeploys(history: list[dict[str, Any]], since: float | None) -> list[tuple[float, str]]:
    """``(time, model_uri)`` of the planner's successful redeploys from ``since`` on."""
    if since is None:
        return []
    return [
        (epoch(r["time"]), str(r["payload"]["params"].get("model_uri")))
        for r in history
        if _action(r, "planner", "redeploy") and epoch(r["time"]) >= since
    ]


def accuracy(records: list[dict[str, Any]]) -> float | None:
    answered = [r for r in records if r["prediction"] is not None]
    if not answered:
        return None
    right = sum(1 for r in answered if r["prediction"] == r["label"])
    return round(right / len(answered), 4)


def _p95(records: list[dict[str, Any]]) -> float | None:
    latencies = sorted(r["latency_ms"] for r in records)
    return round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None


def _gap(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round((before - after) * 100, 1)


def _delay(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 2)


def compute(
    history: list[dict[str, Any]],
    requests: list[dict[str, Any]],
    phases: list[dict[str, Any]],
    evaluation: dict[str, Any] | None = None,
    clean_evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary of one demo run.

    Args:
        history: The audit trail (``Client.history`` records, findings and run events included).
        requests: The traffic's records (``Request.to_dict()``).
        phases: ``{name, start, end}`` of each phase, in epoch seconds.
        evaluation: Accuracy on the held-out drifted set of the model before the drift
            (``before``), the new version (``new``) and the model at the end (``after``).
        clean_evaluation: Accuracy on the same held-out images, uncorrupted, of the model
            before the drift (``before``): its accuracy before the drift.
    """
    starts = {p["name"]: p["start"] for p in phases}
    onset, spike = starts.get("drift"), starts.get("spike")
    detected = _first(history, onset, _is_drift)
    submitted = _first(history, onset, lambda r: _action(r, "planner", "run"))
    promoted = _first(history, onset, lambda r: _action(r, "planner", "promote"))
    rollouts = redeploys(history, onset)
    serving, new_uri = rollouts[0] if rollouts else (None, None)
    # A later rollout to another model ends the new version's time (a rollback).
    rollback = next((t for t, uri in rollouts[1:] if uri != new_uri), None)
    breach = _first(history, spike, _is_breach)
    scaled = _first(history, breach, _is_scale_out)
    calm = starts.get("calm")
    scaled_in = _first(history, calm, _is_scale_in)
    first = min((r["time"] for r in requests), default=None)
    last = max((r["time"] for r in requests), default=None)
    before = [r for r in requests if r["phase"] == "clean"]
    during = [r for r in requests if onset is not None and r["time"] >= onset]
    during = [r for r in during if serving is None or r["time"] < serving]
    # The new version on live traffic: what it answered itself, until a rollback.
    after = [
        r
        for r in requests
        if serving is not None
        and r["time"] >= serving
        and r["model_uri"] == new_uri
        and (rollback is None or r["time"] < rollback)
    ]
    # What the loop did: its calls that change something, not its questions.
    loop_actions = [
        r
        for r in history
        if r["kind"] == "action"
        and r["payload"].get("caller") != DEMO_CALLER
        and r["name"] not in QUERIES
    ]
    return {
        "requests": len(requests),
        "failed_requests": sum(1 for r in requests if r["status"] != 200),
        "labelled_requests": sum(1 for r in requests if r["labelled"]),
        "traffic_seconds": _delay(first, last),
        "accuracy": {
            "before_drift": accuracy(before),
            "during_drift": accuracy(during),
            "after_recovery": accuracy(after),
        },
        "new_version": new_uri,
        "held_out_clean": clean_evaluation or {},
        "held_out_drifted": evaluation or {},
        # The quality bar (points; within 2 is the goal): the new version on the
        # held-out images as the drift made them, against the model before the drift
        # on the same images as they were. The same images on both sides, so which
        # digits happened to be held out (hard ones or easy ones) cancels out.
        "recovery_gap_points": _gap(
            (clean_evaluation or {}).get("before"), (evaluation or {}).get("new")
        ),
        "seconds": {
            "onset_to_detection": _delay(onset, detected),
            "onset_to_retraining": _delay(onset, submitted),
            "onset_to_promotion": _delay(onset, promoted),
            "onset_to_new_version_serving": _delay(onset, serving),
            "new_version_serving_to_rollback": _delay(serving, rollback),
            "breach_to_scale_out": _delay(breach, scaled),
            "spike_to_breach": _delay(spike, breach),
            "load_end_to_scale_in": _delay(calm, scaled_in),
        },
        "scaling_turnarounds": direction_changes(history),
        # From the spike on: the load part's own scaling, out then in once if it
        # does not flap (a breach earlier, a fresh replica's first slow requests
        # on a busy machine say, may add a scale-out and a scale-in before it).
        "scaling_turnarounds_under_load": (
            None
            if spike is None
            else direction_changes([r for r in history if epoch(r["time"]) >= spike])
        ),
        # Client-side p95 in the phases without a spike: a latency floor shows here.
        "latency_p95_ms": {
            name: _p95([r for r in requests if r["phase"] == name and r["status"] == 200])
            for name in ("clean", "calm")
        },
        # How long the planner took to add replicas (activating standbys, or starting them).
        "scale_out_action_seconds": max(
            (float(r["payload"].get("duration") or 0) for r in history if _is_scale_out(r)),
            default=None,
        ),
        "drift_findings_before_onset": sum(
            1 for r in history if _is_drift(r) and onset is not None and epoch(r["time"]) < onset
        ),
        "actions": {
            "by_the_loop": len(loop_actions),
            "by_the_demo": sum(1 for r in history if r["kind"] == "action") - len(loop_actions),
            "loop_by_actuator": dict(
                Counter(f"{r['agent']}.{r['name']}" for r in loop_actions).most_common()
            ),
        },
        "marks": {
            "drift_onset": onset,
            "detection": detected,
            "retraining": submitted,
            "promotion": promoted,
            "new_version_serving": serving,
            "rollback": rollback,
            "spike": spike,
            "slo_breach": breach,
            "scale_out": scaled,
            "load_end": calm,
            "scale_in": scaled_in,
        },
        "phases": phases,
    }


def replica_timeline(history: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """``(time, replicas)`` of the service: its deploy, then each planner ``scale``."""
    steps: list[tuple[float, int]] = []
    for record in history:
        if _action(record, "planner", "deploy") and not steps:
            services = (record["payload"].get("result") or {}).get("services") or [{}]
            replicas = int(services[0].get("details", {}).get("replicas", 1))
            steps.append((epoch(record["time"]), replicas))
        elif _action(record, "planner", "scale"):
            change = replicas_of(record["payload"])
            if change is not None:
                steps.append((epoch(record["time"]), change[1]))
    return steps


def _cell(value: Any, digits: int = 1) -> str:
    """A figure for the table: accuracies with 3 digits, seconds and points with 1."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(summary: dict[str, Any]) -> str:
    """The summary as aligned text lines for the terminal."""
    held, clean = summary["held_out_drifted"], summary.get("held_out_clean", {})
    rows = [
        ("requests sent (failed)", f"{summary['requests']} ({summary['failed_requests']})"),
        ("accuracy before drift", _cell(summary["accuracy"]["before_drift"], 3)),
        ("accuracy during drift", _cell(summary["accuracy"]["during_drift"], 3)),
        ("accuracy after recovery", _cell(summary["accuracy"]["after_recovery"], 3)),
        ("held-out clean: model before drift", _cell(clean.get("before"), 3)),
        ("held-out drifted: model before drift", _cell(held.get("before"), 3)),
        ("held-out drifted: new version", _cell(held.get("new"), 3)),
        ("held-out drifted: model at the end", _cell(held.get("after"), 3)),
        ("recovery gap, held-out (points)", _cell(summary.get("recovery_gap_points"))),
    ]
    rows += [(f"seconds {k.replace('_', ' ')}", _cell(v)) for k, v in summary["seconds"].items()]
    rows.append(("longest scale-out action (s)", _cell(summary.get("scale_out_action_seconds"), 2)))
    rows.append(("scaling turnarounds (out/in)", _cell(summary.get("scaling_turnarounds"))))
    for phase, p95 in (summary.get("latency_p95_ms") or {}).items():
        rows.append((f"client p95 in the {phase} phase (ms)", _cell(p95)))
    alarms = summary.get("drift_findings_before_onset")
    rows.append(("drift findings before the onset", _cell(alarms)))
    rows.append(("actions by the loop", _cell(summary["actions"]["by_the_loop"])))
    rows += [(f"  {k}", str(v)) for k, v in summary["actions"]["loop_by_actuator"].items()]
    for name, shadow in (summary.get("shadows") or {}).items():
        c = shadow["counts"]
        rows.append(
            (
                f"{name}-shadow {json.dumps(shadow['changes'])}",
                f"{c['same']} same, {c['changed']} changed, {c['only_live']} only live, "
                f"{c['only_shadow']} only shadow",
            )
        )
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write(summary: dict[str, Any], path: Path) -> Path:
    """Write the summary as JSON; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path


def evaluate(
    tracking_uri: str,
    model_uris: dict[str, str],
    x: Any,
    y: Any,
    columns: tuple[str, ...] | None = None,
) -> dict[str, float | str]:
    """Accuracy of each named scikit-learn model on ``(x, y)``; blocking: call it in a thread.

    ``columns`` names the features for models fitted on named columns (a frame).

    Models load through an explicit MLflow client of ``tracking_uri`` (no global
    tracking URI is set: the agents in this process have their own clients).
    """
    import mlflow.sklearn
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from scanflow_agents.knowledge import ModelRef

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    result: dict[str, float | str] = {}
    for name, uri in model_uris.items():
        parsed = ModelRef.parse(uri)
        if parsed is None:
            raise ValueError(f"{uri!r} names no registered model version or alias")
        model = parsed.name
        # A parsed reference names exactly one of a version and an alias.
        ref = parsed.version or client.get_model_version_by_alias(model, str(parsed.alias)).version
        source = client.get_model_version_download_uri(model, ref)
        local = download_artifacts(artifact_uri=source, tracking_uri=tracking_uri)
        # The example's models are scikit-learn ones; their own flavour loads them without
        # the generic wrapper's schema inference (and its warnings).
        rows = np.asarray(x, dtype=float)
        if columns is not None:
            import pandas as pd

            rows = pd.DataFrame(rows, columns=list(columns))
        predicted = np.asarray(mlflow.sklearn.load_model(local).predict(rows))
        if predicted.dtype.kind == "f":  # a class label that came back as a float
            predicted = predicted.astype(int)
        result[name] = round(float((predicted == np.asarray(y)).mean()), 4)
        result[f"{name}_model"] = f"models:/{model}/{ref}"
    return result
