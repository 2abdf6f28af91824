"""How much faster than real time a recorded history replays.

Records a history for real, then replays it: the quickstart's watcher and
scaler (``examples/quickstart.py``) run on a nats-server of their own for
``--seconds``, the watcher's sensor sampling every ``--every`` seconds (its
rule scales out above 100 requests/s, the scaler's cooldown refuses some
calls). The history is read back from the stream (every event, as
``scanflow history --export`` reads it) and replayed ``--rounds`` times, once
unchanged and then with the changed policy of ``examples/shadow_policy.py``.
Reports the recorded span, the records, and per replay its time, observations
per second and the span divided by it ("x real time").

Usage: ``python bench/replay.py [--seconds 240] [--every 0.05] [--json PATH]``
(the default run records four minutes, as long as ``scanflow demo``).

With ``--demo DIR`` it replays a recorded ``scanflow demo`` run instead: the
built-in checker and improver on the run's ``history.jsonl`` with its
``settings.json`` (both in the demo's report folder, ``DIR/report``), reading
the run's MLflow read-only (its store in ``DIR/stack/mlflow``, served again).
Record one first: ``scanflow demo --report-dir DIR/report --work-dir DIR/stack``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import quickstart  # noqa: E402
import shadow_policy  # noqa: E402
from _report import publish  # noqa: E402

from scanflow_agents import Agent, sensor  # noqa: E402
from scanflow_agents.controls import Controls  # noqa: E402
from scanflow_agents.knowledge import KnowledgeClient  # noqa: E402
from scanflow_agents.replaying import replay  # noqa: E402
from scanflow_agents.testing import AgentHarness, NatsServer  # noqa: E402

DEFAULT_JSON = ROOT / "bench" / "results" / "replay.json"
DEMO_JSON = ROOT / "bench" / "results" / "replay-demo.json"
#: The goal of the replay issue: a recorded run replays at least this much faster.
MIN_X_REAL_TIME = 100.0


def _paced(every: float) -> type[quickstart.LoadWatch]:
    """The quickstart's watcher with its sensor sampling every ``every`` seconds."""

    class PacedWatch(quickstart.LoadWatch, name="load-watch"):
        @sensor(every=every, id="request_rate")
        async def sampled(self) -> dict[str, float]:
            return await quickstart.LoadWatch.request_rate(self)

    return PacedWatch


async def record(seconds: float, every: float) -> list[dict[str, Any]]:
    """A real history: the agents on a nats-server for ``seconds``, read back whole."""
    with NatsServer() as server:
        watch = _paced(every)()
        async with AgentHarness(
            watch, quickstart.Scaler(), nats_url=server.url, schedule=True
        ) as h:
            await asyncio.sleep(seconds)
            # Paused first, as the guide says: no decision is half made at the end.
            await Controls(h.client).pause("load-watch", reason="the span ends")
            await h.settle(30)
            return await h.client.history(kinds=None, limit=10_000_000)


async def timed(
    agent: Agent,
    history: list[dict[str, Any]],
    rounds: int,
    *,
    knowledge: KnowledgeClient | None = None,
) -> dict[str, Any]:
    took, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = await replay(agent, history, knowledge=knowledge)
        took.append(time.perf_counter() - started)
    assert result is not None
    span = _span(history)
    median = statistics.median(took)
    return {
        "seconds": round(median, 4),
        "rounds": rounds,
        "observations_per_s": round(result.observations / median),
        "x_real_time": round(span / median, 1),
        "counts": result.counts(),
    }


def _span(history: list[dict[str, Any]]) -> float:
    times = [datetime.fromisoformat(r["time"]).timestamp() for r in history]
    return max(times) - min(times)


async def run(seconds: float, every: float, rounds: int) -> dict[str, Any]:
    _log(f"recording {seconds:g} s, a sample every {every:g} s")
    history = await record(seconds, every)
    _log(f"replaying {len(history)} records, {rounds} rounds each")
    unchanged = await timed(_paced(every)(), history, rounds)
    changed = await timed(shadow_policy.LoadWatch(), history, rounds)
    return {"recorded": _recorded(history), "unchanged": unchanged, "changed": changed}


async def run_demo_replay(folder: Path, rounds: int) -> dict[str, Any]:
    """The loop's checker and improver, replayed on a recorded demo run (see the docstring)."""
    from scanflow_agents.builtin.checker import Checker, CheckerSettings
    from scanflow_agents.builtin.improver import Improver

    from scanflow_agents import Settings
    from scanflow_agents.knowledge import KnowledgeClient, MlflowServer

    report, store = folder / "report", folder / "stack" / "mlflow"
    history = [json.loads(line) for line in (report / "history.jsonl").read_text().splitlines()]
    ran_with = json.loads((report / "settings.json").read_text())
    results: dict[str, Any] = {"recorded": _recorded(history)}
    async with MlflowServer(f"sqlite:///{store / 'mlflow.db'}", str(store / "artifacts")) as mlflow:
        ran_with["mlflow"]["tracking_uri"] = mlflow.url
        settings = Settings.model_validate(ran_with)
        later = ran_with["agents"].setdefault("checker", {})
        later["consecutive"] = CheckerSettings.model_validate(later).consecutive + 1
        changed = Settings.model_validate(ran_with)
        async with KnowledgeClient(settings.mlflow, read_only=True) as knowledge:
            for name, agent in (
                ("checker", Checker(settings=settings)),
                ("improver", Improver(settings=settings)),
                ("checker, one more window", Checker(settings=changed)),
            ):
                _log(f"replaying the {name}, {rounds} rounds")
                results[name] = await timed(agent, history, rounds, knowledge=knowledge)
    return results


def _recorded(history: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for r in history:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    return {
        "seconds": round(_span(history), 1),
        "records": len(history),
        "by_kind": kinds,
        "bytes": sum(len(json.dumps(r)) for r in history),
    }


def table(results: dict[str, Any]) -> str:
    rec = results["recorded"]
    lines = [
        f"recorded: {rec['seconds']} s, {rec['records']} records {rec['by_kind']}",
        "",
        "| replay | seconds | inputs/s | x real time | same / changed / removed / added |",
        "|---|---|---|---|---|",
    ]
    replays = [name for name in results if name not in ("recorded", "environment")]
    for name in replays:
        r = results[name]
        c = r["counts"]
        lines.append(
            f"| {name} | {r['seconds']} | {r['observations_per_s']:,} | {r['x_real_time']:,} "
            f"| {c['same']} / {c['changed']} / {c['removed']} / {c['added']} |"
        )
    worst = min(results[name]["x_real_time"] for name in replays)
    met = "met" if worst >= MIN_X_REAL_TIME else "NOT met"
    lines += ["", f"| goal | >= {MIN_X_REAL_TIME:g}x real time | {worst:,}x | {met} |"]
    return "\n".join(lines)


def _log(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="how long to record")
    parser.add_argument("--every", type=float, default=0.05, help="the sensor's interval")
    parser.add_argument("--rounds", type=int, default=5, help="replays of each policy")
    parser.add_argument("--json", type=Path, help="where to write results")
    parser.add_argument(
        "--demo", type=Path, metavar="DIR", help="replay a recorded demo run (see above)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.demo is not None:
        results = asyncio.run(run_demo_replay(args.demo, args.rounds))
    else:
        results = asyncio.run(run(args.seconds, args.every, args.rounds))
    results["environment"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.monotonic() - started, 1),
    }
    path = args.json or (DEMO_JSON if args.demo is not None else DEFAULT_JSON)
    publish(results, path, table(results))


if __name__ == "__main__":
    main()
