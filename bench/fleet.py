"""Fleet benchmark: the tracker against 100, 300 and 1,000 model-server replicas.

One run, on loopback, against one nats-server (JetStream) started here:

- the built-in tracker runs in its own process (``scanflow run``), windows of
  10 s, as a deployment would run it;
- synthetic replicas, all in this process, send serving reports as a model
  server does (the payload built by the server's own ``ServingStats`` from
  digits-shaped traffic: 64 features, 8 requests a second of one row each),
  every ``interval`` seconds each, their phases spread evenly over the interval;
- for each fleet size it measures the report's size, the telemetry stream's
  growth, the MLflow metrics the replicas would log (each replica logs every
  number of its report), the tracker's CPU and memory, and its lag: from the
  end of a window to its ``observation.tracker.serving`` arriving here.

Not measured yet (see docs/explanation/benchmarks.md): drift detection in a
share of the replicas (it needs the checker with its references) and MLflow
under the replicas' writes (the figure is what they would send).

Usage: ``python bench/fleet.py [--quick] [--sizes 100,300,1000] [--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _procs import Child, Children, scanflow, sigterm_exits

from scanflow_agents import Envelope, Settings
from scanflow_agents._kit import loops
from scanflow_agents.clients import connect_transport
from scanflow_agents.serving.reporting import envelope, flatten
from scanflow_agents.serving.stats import ServingStats
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Message, Transport
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.servers import NatsServer

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "fleet.json"
WINDOW_SECONDS = 10.0
FEATURES = 64
REQUESTS_PER_SECOND = 8  # per replica


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    interval: float  # seconds between two reports of one replica
    seconds: float  # measured time per fleet size (after one window of warm-up)


FULL = Plan(sizes=(100, 300, 1000), interval=10.0, seconds=60.0)
QUICK = Plan(sizes=(20,), interval=2.0, seconds=12.0)


def report_template(interval: float, seed: int = 0) -> dict[str, Any]:
    """One replica's report over ``interval`` seconds, as the model server builds it."""
    rng = np.random.default_rng(seed)
    stats = ServingStats()
    requests = int(REQUESTS_PER_SECOND * interval)
    names = [f"pixel_{i}" for i in range(FEATURES)]
    for number in range(requests):
        stats.record_request("/predict", 200, float(rng.uniform(0.001, 0.004)))
        row = rng.integers(0, 17, (1, FEATURES)).astype(float)
        stats.record_predictions([f"p{number}"], names, row, [int(rng.integers(0, 10))])
    stats.record_labels([(f"p{n}", int(rng.integers(0, 10))) for n in range(0, requests, 4)])
    return {
        "workflow": "fleet",
        "node": "model",
        "model_uri": "models:/digits/1",
        **stats.take_window(),
        "objectives": {"latency_p95_ms": 50.0},
    }


class Reporters:
    """``count`` synthetic replicas reporting every ``interval`` seconds on one connection."""

    def __init__(self, transport: Transport, subject: str, template: dict[str, Any]) -> None:
        self.transport = transport
        self.subject = subject
        self.template = template
        self.sent = 0
        self.bytes = 0
        self.late: list[float] = []  # seconds a report went out after its due time

    async def run(self, count: int, interval: float, until: float) -> None:
        started = time.time()
        due = [(started + interval * replica / count, replica) for replica in range(count)]
        sequence = [0] * count
        while True:
            now = time.time()
            if now >= until:
                return
            sent_any = False
            for index, (at, replica) in enumerate(due):
                if at > now:
                    continue
                sequence[replica] += 1
                await self._send(replica, sequence[replica], at, interval)
                self.late.append(time.time() - at)
                due[index] = (at + interval, replica)
                sent_any = True
            if not sent_any:
                await asyncio.sleep(0.01)

    async def _send(self, replica: int, sequence: int, end: float, interval: float) -> None:
        payload = {
            **self.template,
            "replica": f"replica-{replica:04d}",
            "sequence": sequence,
            "window": {"start": end - interval, "end": end, "seconds": interval},
        }
        message = envelope("event", f"serving/fleet/model/replica-{replica:04d}", payload)
        data = json.dumps(message).encode()
        await self.transport.publish(self.subject, data)
        self.sent += 1
        self.bytes += len(data)


class Lag:
    """The tracker's observations of serving windows, and how late each arrived."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.windows = 0

    async def on_observation(self, message: Message) -> None:
        payload = Envelope.decode(message.data).payload
        value = payload.get("value") if isinstance(payload, dict) else None
        if isinstance(value, dict) and value.get("workflow") == "fleet":
            self.windows += 1
            self.lags.append(time.time() - float(value["window"]["end"]))


async def _telemetry_bytes(transport: NatsTransport, stream: str) -> int:
    return int((await transport.js.stream_info(stream)).state.bytes)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def bench_size(
    count: int, plan: Plan, url: str, template: dict[str, Any], children: Children
) -> dict[str, Any]:
    """One fleet size, against a fresh tracker in a fresh namespace."""
    namespace = f"fleet-{uuid.uuid4().hex[:6]}"
    settings = Settings.defaults().model_copy(update={"namespace": namespace})
    settings.nats.url = url
    transport = await connect_transport(settings, name="fleet-bench")
    assert isinstance(transport, NatsTransport)
    subjects = Subjects(namespace)
    tracker = children.start(
        f"tracker-{count}",
        scanflow(url, namespace, "run", "scanflow_agents.builtin.tracker:Tracker"),
        env={
            "SCANFLOW_AGENTS__TRACKER__WINDOW_SECONDS": str(WINDOW_SECONDS),
            "SCANFLOW_AGENTS__TRACKER__TRAINING_POLL_SECONDS": "3600",
            # No MLflow in this bench: the serving sensor does not read it, and the
            # windows' dozen metrics per node are not what is measured here.
            "SCANFLOW_MLFLOW__TRACKING_URI": "http://127.0.0.1:9",
            "SCANFLOW_AGENTS__TRACKER__SERVING_EXPERIMENT": "",
        },
    )
    try:
        await _running(transport, subjects, tracker)
        lag = Lag()
        await transport.subscribe(subjects.event("observation.tracker.serving"), lag.on_observation)
        reporters = Reporters(transport, subjects.event("telemetry.serving.fleet.model"), template)
        process = psutil.Process(tracker.pid)
        # One window of warm-up: the tracker's first window is a partial one.
        warm_until = time.time() + WINDOW_SECONDS
        task = asyncio.create_task(reporters.run(count, plan.interval, warm_until + plan.seconds))
        await asyncio.sleep(max(warm_until - time.time(), 0))
        stream = settings.telemetry_stream_name
        bytes_before = await _telemetry_bytes(transport, stream)
        cpu_before, lags_before = _cpu_seconds(process), len(lag.lags)
        sent_before, measured_from = reporters.sent, time.monotonic()
        await task
        elapsed = time.monotonic() - measured_from
        # The last window closes at the first report past its end: none comes now.
        cpu = (_cpu_seconds(process) - cpu_before) / elapsed
        grown = (await _telemetry_bytes(transport, stream) - bytes_before) / elapsed
        lags = lag.lags[lags_before:]
        sent = reporters.sent - sent_before
        late = sorted(reporters.late)
        return {
            "replicas": count,
            "reports_per_s": round(sent / elapsed, 1),
            "report_bytes": round(reporters.bytes / max(reporters.sent, 1)),
            "telemetry_stream_bytes_per_s": round(grown),
            "mlflow_metrics_per_report": len(flatten(template)),
            "mlflow_metrics_per_s": round(len(flatten(template)) * sent / elapsed),
            "tracker_cpu_percent": round(100 * cpu, 1),
            "tracker_rss_mib": round(process.memory_info().rss / 2**20, 1),
            "tracker_windows": len(lags),
            "tracker_lag_s": {
                "median": round(statistics.median(lags), 2) if lags else None,
                "max": round(max(lags), 2) if lags else None,
            },
            "reporters_late_p99_s": round(late[int(0.99 * (len(late) - 1))], 3) if late else None,
        }
    finally:
        children.stop(tracker)
        await transport.close()


async def _running(transport: Transport, subjects: Subjects, tracker: Child) -> None:
    """Wait until the tracker answers discovery."""
    envelope_ = Envelope(kind="describe", source="fleet-bench")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tracker.check_alive()
        answers = await transport.gather(subjects.discover, envelope_.encode(), 0.5, expect=1)
        if answers:
            return
    raise RuntimeError(f"the tracker did not start:\n{tracker.stderr_tail()}")


async def run_all(url: str, plan: Plan, children: Children) -> dict[str, Any]:
    template = report_template(plan.interval)
    results = []
    for count in plan.sizes:
        result = await bench_size(count, plan, url, template, children)
        print(json.dumps(result))
        results.append(result)
    return {"sizes": results}


def table(results: dict[str, Any]) -> str:
    header = (
        "replicas  reports/s  report KB  stream MB/s  MLflow metrics/s  "
        "tracker CPU %  RSS MiB  lag median/max s"
    )
    lines = [header]
    for row in results["sizes"]:
        lag = row["tracker_lag_s"]
        stream_mb = row["telemetry_stream_bytes_per_s"] / 1e6
        lines.append(
            f"{row['replicas']:>8}  {row['reports_per_s']:>9}  {row['report_bytes'] / 1000:>9.1f}"
            f"  {stream_mb:>11.2f}  {row['mlflow_metrics_per_s']:>16}"
            f"  {row['tracker_cpu_percent']:>13}  {row['tracker_rss_mib']:>7}"
            f"  {lag['median']}/{lag['max']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--sizes", help="fleet sizes, comma-separated (default 100,300,1000)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.sizes:
        plan = Plan(tuple(int(s) for s in args.sizes.split(",")), plan.interval, plan.seconds)
    sigterm_exits()
    children = Children()
    started = time.monotonic()
    try:
        with NatsServer() as server:
            try:
                results = loops.run(lambda: run_all(server.url, plan, children))
            finally:
                children.stop_all()
    finally:
        children.stop_all()
    results["environment"] = {
        "quick": args.quick,
        "interval_s": plan.interval,
        "measured_s_per_size": plan.seconds,
        "window_s": WINDOW_SECONDS,
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
        "seconds": round(time.monotonic() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
