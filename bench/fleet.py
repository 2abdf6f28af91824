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

Drift in a few replicas: the built-in checker runs too (its own process,
references from windows, so no MLflow), and one window into the measured
time, 5 % of the replicas start being served other inputs (8 of the 64
features mirrored). Its time to detection is from the first drifted report to
the checker's ``finding.replicas.fleet`` arriving here (the tracker's windows
and the checker's "two windows in a row" set its floor).

Not measured yet (see docs/explanation/benchmarks.md): MLflow under the
replicas' writes (the figure is what they would send).

Usage: ``python bench/fleet.py [--quick] [--sizes 100,300,1000] [--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
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
from _report import publish

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


DRIFTED_SHARE = 0.05  # of the replicas, served other inputs once drift starts
DRIFTED_FEATURES = 8  # mirrored (16 - x) in the drifted replicas' rows


def report_template(interval: float, seed: int = 0, *, drifted: bool = False) -> dict[str, Any]:
    """One replica's report over ``interval`` seconds, as the model server builds it.

    ``drifted``: the first :data:`DRIFTED_FEATURES` features of every row are
    mirrored, as a broken feature pipeline in one region would serve them.
    """
    rng = np.random.default_rng(seed)
    stats = ServingStats()
    requests = int(REQUESTS_PER_SECOND * interval)
    names = [f"pixel_{i}" for i in range(FEATURES)]
    for number in range(requests):
        stats.record_request("/predict", 200, float(rng.uniform(0.001, 0.004)))
        row = rng.integers(0, 17, (1, FEATURES)).astype(float)
        if drifted:
            row[:, :DRIFTED_FEATURES] = 16 - rng.integers(0, 5, (1, DRIFTED_FEATURES))
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

    def __init__(
        self,
        transport: Transport,
        subject: str,
        template: dict[str, Any],
        drifted: dict[str, Any] | None = None,
    ) -> None:
        self.transport = transport
        self.subject = subject
        self.template = template
        self.drifted_template = drifted or template
        self.drifted: set[int] = set()  # replicas served other inputs from ``drift_from``
        self.drift_from = math.inf
        self.first_drifted: float | None = None  # when the first drifted report went out
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
        template = self.template
        if replica in self.drifted and end >= self.drift_from:
            template = self.drifted_template
            if self.first_drifted is None:
                self.first_drifted = time.time()
        payload = {
            **template,
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


class Findings:
    """The checker's ``finding.replicas.fleet`` events, with when each arrived."""

    def __init__(self) -> None:
        self.arrived: list[tuple[float, list[str]]] = []

    async def on_finding(self, message: Message) -> None:
        payload = Envelope.decode(message.data).payload
        if isinstance(payload, dict):
            self.arrived.append((time.time(), list(payload.get("replicas") or [])))


async def _telemetry_bytes(transport: NatsTransport, stream: str) -> int:
    return int((await transport.js.stream_info(stream)).state.bytes)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def bench_size(
    count: int,
    plan: Plan,
    url: str,
    template: dict[str, Any],
    drifted: dict[str, Any],
    children: Children,
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
    checker = children.start(
        f"checker-{count}",
        scanflow(url, namespace, "run", "scanflow_agents.builtin.checker:Checker"),
        env={
            # References from the first windows: no MLflow in this bench.
            "SCANFLOW_AGENTS__CHECKER__REFERENCE": "windows",
            "SCANFLOW_MLFLOW__TRACKING_URI": "http://127.0.0.1:9",
        },
    )
    try:
        await _running(transport, subjects, tracker, "tracker")
        await _running(transport, subjects, checker, "checker")
        lag, findings = Lag(), Findings()
        await transport.subscribe(subjects.event("observation.tracker.serving"), lag.on_observation)
        await transport.subscribe(subjects.event("finding.replicas.fleet"), findings.on_finding)
        topic = subjects.event("telemetry.serving.fleet.model")
        reporters = Reporters(transport, topic, template, drifted)
        # Spread over the fleet, as a region or a client would be: every 20th replica.
        reporters.drifted = set(range(0, count, round(1 / DRIFTED_SHARE)))
        process = psutil.Process(tracker.pid)
        # One window of warm-up: the tracker's first window is a partial one.
        warm_until = time.time() + WINDOW_SECONDS
        task = asyncio.create_task(reporters.run(count, plan.interval, warm_until + plan.seconds))
        await asyncio.sleep(max(warm_until - time.time(), 0))
        reporters.drift_from = warm_until + WINDOW_SECONDS
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
        apart = {f"replica-{replica:04d}" for replica in reporters.drifted}
        caught = [
            (at, names) for at, names in findings.arrived if reporters.first_drifted is not None
            and at >= reporters.first_drifted and set(names) & apart
        ]  # fmt: skip
        detected = caught[0] if caught else None
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
            "drifted_replicas": len(apart),
            # From the first drifted report to the checker's finding naming one of them.
            "drift_detected_s": None
            if detected is None or reporters.first_drifted is None
            else round(detected[0] - reporters.first_drifted, 1),
            "drift_named": 0 if detected is None else len(set(detected[1]) & apart),
            "false_findings": sum(1 for _, names in findings.arrived if set(names) - apart),
        }
    finally:
        children.stop(checker)
        children.stop(tracker)
        await transport.close()


async def _running(transport: Transport, subjects: Subjects, agent: Child, name: str) -> None:
    """Wait until the agent ``name`` answers discovery."""
    envelope_ = Envelope(kind="describe", source="fleet-bench")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        agent.check_alive()
        # Every answer of the half second: with a count, the first agents to answer
        # could leave out the one waited for.
        answers = await transport.gather(subjects.discover, envelope_.encode(), 0.5)
        if name in {_source(answer) for answer in answers}:
            return
    raise RuntimeError(f"the {name} did not start:\n{agent.stderr_tail()}")


def _source(answer: bytes) -> str | None:
    try:
        return Envelope.decode(answer).source
    except ValueError:  # not an envelope (an empty status reply)
        return None


async def run_all(url: str, plan: Plan, children: Children) -> dict[str, Any]:
    template = report_template(plan.interval)
    drifted = report_template(plan.interval, seed=1, drifted=True)
    results = []
    for count in plan.sizes:
        result = await bench_size(count, plan, url, template, drifted, children)
        print(json.dumps(result))
        results.append(result)
    return {"sizes": results}


def table(results: dict[str, Any]) -> str:
    header = (
        "replicas  reports/s  report KB  stream MB/s  MLflow metrics/s  "
        "tracker CPU %  RSS MiB  lag median/max s  drift detected s (named)"
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
            f"  {row['drift_detected_s']} ({row['drift_named']}/{row['drifted_replicas']})"
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
    publish(results, args.json, table(results))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
