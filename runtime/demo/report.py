"""The report: PNG plots (matplotlib, Agg backend) and one HTML page that shows them.

- ``accuracy.png``: rolling accuracy of the labelled requests over time;
- ``latency.png``: each request's latency as the client saw it, and its rolling p95;
- ``replicas.png``: the service's replicas over time (from the planner's actions);

each marked with drift onset, detection, retraining, promotion, new version
serving, the load spike, the first SLO breach and the scale-out.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from scanflow_agents.runtime.demo.summary import table

#: Requests in the rolling windows of the plots.
ROLLING = 100
MARKS = {
    "drift_onset": ("drift onset", "tab:red"),
    "detection": ("detection", "tab:orange"),
    "retraining": ("retraining", "tab:purple"),
    "promotion": ("promotion", "tab:brown"),
    "new_version_serving": ("new version serving", "tab:green"),
    "rollback": ("rollback", "black"),
    "spike": ("load spike", "tab:gray"),
    "slo_breach": ("SLO breach", "tab:pink"),
    "scale_out": ("scale-out", "tab:cyan"),
    "load_end": ("load back to normal", "tab:olive"),
    "scale_in": ("scale-in", "tab:blue"),
}


def _rolling(values: np.ndarray, window: int, fn: Any) -> np.ndarray:
    return np.array([fn(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))])


def _marks(ax: Any, marks: dict[str, float | None], origin: float) -> None:
    for key, (label, color) in MARKS.items():
        at = marks.get(key)
        if at is not None:
            ax.axvline(at - origin, color=color, linestyle="--", linewidth=1, label=label)


def _figure(name: str, folder: Path, draw: Any) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, also without a display
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    try:
        draw(ax)
        ax.set_xlabel("seconds since the first request")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7, ncol=2)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def render(
    summary: dict[str, Any],
    requests: list[dict[str, Any]],
    replicas: list[tuple[float, int]],
    folder: Path,
    *,
    objective_ms: float | None = None,
) -> dict[str, Path]:
    """Write the plots and ``report.html`` into ``folder``; returns their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    requests = sorted(requests, key=lambda r: r["time"])
    origin = requests[0]["time"] if requests else 0.0
    marks = summary.get("marks", {})

    def accuracy(ax: Any) -> None:
        labelled = [r for r in requests if r["labelled"] and r["prediction"] is not None]
        t = np.array([r["time"] - origin for r in labelled])
        right = np.array([float(r["prediction"] == r["label"]) for r in labelled])
        if len(t):
            ax.plot(t, _rolling(right, ROLLING, np.mean), label=f"accuracy (last {ROLLING})")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        _marks(ax, marks, origin)

    def latency(ax: Any) -> None:
        t = np.array([r["time"] - origin for r in requests])
        ms = np.array([r["latency_ms"] for r in requests])
        if len(t):
            ax.scatter(t, ms, s=2, alpha=0.25, color="tab:blue", label="request")
            p95 = _rolling(ms, ROLLING, lambda v: np.percentile(v, 95))
            ax.plot(t, p95, color="black", label=f"p95 (last {ROLLING})")
            ax.set_yscale("log")
        if objective_ms:
            ax.axhline(objective_ms, color="red", linewidth=1, label="latency objective (p95)")
        ax.set_ylabel("latency (ms, client side)")
        _marks(ax, marks, origin)

    def replica_steps(ax: Any) -> None:
        if replicas:
            end = max(requests[-1]["time"] if requests else 0.0, replicas[-1][0])
            times = [t - origin for t, _ in replicas] + [end - origin]
            counts = [n for _, n in replicas] + [replicas[-1][1]]
            ax.step(times, counts, where="post", label="replicas")
            ax.set_ylim(0, max(counts) + 1)
        ax.set_ylabel("replicas")
        _marks(ax, marks, origin)

    paths = {
        "accuracy": _figure("accuracy", folder, accuracy),
        "latency": _figure("latency", folder, latency),
        "replicas": _figure("replicas", folder, replica_steps),
    }
    paths["html"] = _page(summary, paths, folder)
    return paths


def _page(summary: dict[str, Any], plots: dict[str, Path], folder: Path) -> Path:
    images = "\n".join(
        f'<h2>{name}</h2><img src="{path.name}" alt="{name} over time">'
        for name, path in plots.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scanflow demo report</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto}}
img{{max-width:100%}}pre{{background:#f6f6f6;padding:1em}}</style></head>
<body><h1>Scanflow demo: the supervised loop on one machine</h1>
<h2>Summary</h2><pre>{html.escape(table(summary))}</pre>
{images}
<h2>All figures (summary.json)</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
</body></html>
"""
    path = folder / "report.html"
    path.write_text(page)
    return path
