"""Serving benchmark: the same digits model behind this project's server, MLServer and MLflow.

One run registers scikit-learn digits models in an MLflow tracking server of
its own (``mlflow server``, sqlite and artifacts in a temporary folder): every
server loads them from it, and this project's server sends its reports there.
For each model, it starts each server in turn
on one worker pinned to one core (``taskset``), the client pinned to another.
The client is one aiohttp session with keep-alive connections, sending one row
per request in MLflow's scoring protocol (``{"inputs": [[...]]}``), the same
bytes to every server:

- closed loop: N connections, each sending its next request when the last
  answer arrived, for a fixed time; requests/s, p50 and p99;
- open loop: requests started at a fixed rate whatever the answers do
  (latency counted from when each was due, so a server that falls behind shows
  it); p50 and p99;
- the server's CPU time (all its processes) per request in each, its start-up
  time (start to ready) and memory once done.

Usage: ``python bench/serving.py [--quick] [--json PATH] [--servers a,b] [--models a,b]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from _measure import summary
from _procs import Children, sigterm_exits
from _report import publish
from _servers import (
    MLSERVER_VERSION,
    SERVERS,
    Peer,
    cache_folder,
    mlflow_serve,
    mlserver,
    mlserver_venv,
    scanflow,
)

from scanflow_agents._kit import loops
from scanflow_agents.knowledge import MlflowServer
from scanflow_agents.transports.servers import NatsServer

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "serving.json"
MODELS = ("logreg", "forest")
SERVER_CORE, CLIENT_CORE = 1, 0


@dataclass(frozen=True)
class Plan:
    """How long each phase runs, with how many connections and at what rate."""

    warmup: float  # seconds of untimed requests after the server is ready
    seconds: float  # of each timed phase
    connections: tuple[int, ...]  # closed-loop concurrencies
    rates: dict[str, float]  # open-loop requests/s, by model
    # Each server is measured this many times, in turn with the others, and its best
    # round is kept (see best_of): on a shared machine, the least disturbed one.
    rounds: int


FULL = Plan(
    warmup=3.0, seconds=8.0, connections=(1, 16), rates={"logreg": 200.0, "forest": 40.0}, rounds=3
)
QUICK = Plan(
    warmup=0.5, seconds=2.0, connections=(1, 8), rates={"logreg": 100.0, "forest": 20.0}, rounds=1
)


# -- the client ---------------------------------------------------------------------------


class Client:
    """One keep-alive session posting the same kind of body to one server."""

    def __init__(self, peer: Peer, rows: list[list[float]]) -> None:
        import aiohttp

        self.url = f"http://127.0.0.1:{peer.port}{peer.predict}"
        self.bodies = [json.dumps({"inputs": [row]}).encode() for row in rows]
        self.sent = 0
        self.failed = 0
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            headers={"Content-Type": "application/json"},
        )

    async def post(self) -> None:
        body = self.bodies[self.sent % len(self.bodies)]
        self.sent += 1
        async with self.session.post(self.url, data=body) as response:
            await response.read()
            if response.status != 200:
                self.failed += 1

    async def closed(self, connections: int, seconds: float) -> tuple[list[float], float]:
        """Latencies of ``connections`` loops sending back to back for ``seconds``."""
        latencies: list[float] = []
        started = time.perf_counter()
        end = started + seconds

        async def loop() -> None:
            while (now := time.perf_counter()) < end:
                await self.post()
                latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(loop() for _ in range(connections)))
        return latencies, time.perf_counter() - started

    async def opened(self, rate: float, seconds: float) -> tuple[list[float], float]:
        """Latencies of requests started ``rate`` times a second, from when each was due."""
        latencies: list[float] = []
        pending: set[asyncio.Task[None]] = set()
        started = time.perf_counter()

        async def one(due: float) -> None:
            await self.post()
            latencies.append(time.perf_counter() - due)

        for i in range(int(rate * seconds)):
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one(due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        return latencies, time.perf_counter() - started

    async def close(self) -> None:
        await self.session.close()


# -- one server ---------------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree_rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    rss = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return rss / 2**20


async def wait_ready(child: Any, peer: Peer, timeout: float) -> float:
    """Seconds until ``peer.ready`` answers 200."""
    import aiohttp

    started = time.monotonic()
    url = f"http://127.0.0.1:{peer.port}{peer.ready}"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < timeout:
            child.check_alive()
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{peer.name} not ready within {timeout:g} s:\n{child.stderr_tail()}")


def phase(latencies: list[float], elapsed: float, cpu: float) -> dict[str, Any]:
    result: dict[str, Any] = summary(latencies)
    result["max_ms"] = round(max(latencies) * 1000, 3)
    result["requests"] = len(latencies)
    result["requests_per_s"] = round(len(latencies) / elapsed, 1)
    result["cpu_us_per_request"] = round(cpu / len(latencies) * 1e6, 1)
    return result


async def bench_server(
    peer: Peer, rows: list[list[float]], rate: float, plan: Plan, children: Children
) -> dict[str, Any]:
    """Start ``peer`` pinned to its core, run every phase against it, stop it."""
    argv = ["taskset", "-c", str(SERVER_CORE), *peer.argv]
    child = children.start(peer.name, argv, env=peer.env)
    result: dict[str, Any] = {"startup_s": round(await wait_ready(child, peer, 180), 2)}
    client = Client(peer, rows)
    try:
        await client.closed(max(plan.connections), plan.warmup)
        for connections in plan.connections:
            before = tree_cpu(child.pid)
            latencies, elapsed = await client.closed(connections, plan.seconds)
            result[f"closed_{connections}"] = phase(
                latencies, elapsed, tree_cpu(child.pid) - before
            )
        before = tree_cpu(child.pid)
        latencies, elapsed = await client.opened(rate, plan.seconds)
        result["open"] = phase(latencies, elapsed, tree_cpu(child.pid) - before)
        result["open"]["rate"] = rate
        result["rss_mib"] = round(tree_rss_mib(child.pid), 1)
        result["failed_requests"] = client.failed
    finally:
        await client.close()
        result["exit_code"] = children.stop(child)
    return result


# -- the run ------------------------------------------------------------------------------


def register_models(tracking_uri: str, models: list[str]) -> dict[str, Any]:
    """Log and register the models on the tracking server (in a child process)."""
    script = Path(__file__).resolve().parent / "_serving_models.py"
    done = subprocess.run(
        [sys.executable, str(script), tracking_uri, *models],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"registering the models failed:\n{done.stderr[-3000:]}")
    registered: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    registered["tracking_uri"] = tracking_uri
    return registered


def peer(name: str, model_uri: str, tracking_uri: str, nats_url: str, folder: Path) -> Peer:
    if name == "scanflow":
        return scanflow(name, model_uri, tracking_uri, nats_url=nats_url, report=True)
    if name == "scanflow-bare":
        return scanflow(name, model_uri, tracking_uri, nats_url=None, report=False)
    if name == "mlflow":
        return mlflow_serve(model_uri, tracking_uri)
    return mlserver(mlserver_venv(cache_folder()), model_uri, tracking_uri, folder / "mlserver")


async def run_all(
    plan: Plan, servers: list[str], models: list[str], folder: Path, children: Children
) -> dict[str, Any]:
    progress("starting MLflow and NATS, registering the models")
    results: dict[str, Any] = {}
    with (
        MlflowServer(startup_timeout=180) as mlflow,
        NatsServer() as nats,
    ):
        registered = register_models(mlflow.url, models)
        for model in models:
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for number in range(1, plan.rounds + 1):
                for name in servers:
                    progress(f"{model}: {name}, round {number} of {plan.rounds}")
                    server = peer(name, registered["models"][model], mlflow.url, nats.url, folder)
                    rounds[name].append(
                        await bench_server(
                            server, registered["rows"], plan.rates[model], plan, children
                        )
                    )
            results[model] = {name: best_of(runs) for name, runs in rounds.items()}
    return results


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each phase from the round where it did best, the rounds themselves under ``rounds``.

    Other work on the machine only ever slows a server down, so each server's
    best round is the closest to what it does alone; every server gets the same
    number of rounds. Closed loops: the round with the most requests/s (with its
    own latencies); the open loop: the round with the lowest p99; CPU per
    request (with one connection), memory and start-up time: their lowest.
    """
    best: dict[str, Any] = {}
    first = next(key for key in runs[0] if key.startswith("closed_"))
    best["cpu_us_per_request"] = min(run[first]["cpu_us_per_request"] for run in runs)
    for key in runs[0]:
        if key.startswith("closed_"):
            best[key] = max((run[key] for run in runs), key=lambda p: p["requests_per_s"])
        elif key == "open":
            best[key] = min((run[key] for run in runs), key=lambda p: p["p99_ms"])
    for key in ("startup_s", "rss_mib"):
        best[key] = min(run[key] for run in runs)
    best["failed_requests"] = sum(run["failed_requests"] for run in runs)
    best["exit_codes"] = [run["exit_code"] for run in runs]
    best["rounds"] = runs
    return best


def progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def environment(plan: Plan, quick: bool, servers: list[str]) -> dict[str, Any]:
    versions = {
        name: metadata.version(name)
        for name in ("mlflow", "scikit-learn", "fastapi", "uvicorn", "aiohttp")
    }
    if "mlserver" in servers:
        versions["mlserver"] = MLSERVER_VERSION
    return {
        "quick": quick,
        "plan": asdict(plan),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "server_core": SERVER_CORE,
        "client_core": CLIENT_CORE,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--models", default=None, help="logreg,forest (quick: logreg)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    servers = [s for s in args.servers.split(",") if s]
    models = (args.models or ("logreg" if args.quick else ",".join(MODELS))).split(",")
    for name, allowed in ((servers, SERVERS), (models, MODELS)):
        unknown = sorted(set(name) - set(allowed))
        if unknown:
            parser.error(f"unknown {', '.join(unknown)}: choose from {', '.join(allowed)}")
    if shutil.which("taskset") is None:
        parser.error("taskset not found: install util-linux (servers are pinned to one core)")
    os.sched_setaffinity(0, {CLIENT_CORE})
    sigterm_exits()
    children = Children()
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
            results = loops.run(lambda: run_all(plan, servers, models, Path(folder), children))
    finally:
        children.stop_all()
    report: dict[str, Any] = {"models": results}
    report["environment"] = environment(plan, args.quick, servers)
    report["environment"]["load_average_before"] = [round(x, 2) for x in load_before]
    report["environment"]["seconds"] = round(time.monotonic() - started, 1)
    publish(report, args.json, table(report))


def table(report: dict[str, Any]) -> str:
    """One line per model and server, with the ratios to this project's server."""
    plan = report["environment"]["plan"]
    low, high = (f"closed_{n}" for n in (plan["connections"][0], plan["connections"][-1]))
    header = [
        "model",
        "server",
        f"req/s {low[7:]} conn",
        "p50 / p99 ms",
        f"req/s {high[7:]} conn",
        "p50 / p99 ms",
        "open p50 / p99 ms",
        f"CPU µs/req {low[7:]} conn",
        "start s",
        "RSS MiB",
    ]
    lines = [header]
    for model, servers in report["models"].items():
        for name, r in servers.items():
            lines.append([
                model, name,
                f"{r[low]['requests_per_s']:,.0f}",
                f"{r[low]['p50_ms']:.2f} / {r[low]['p99_ms']:.2f}",
                f"{r[high]['requests_per_s']:,.0f}",
                f"{r[high]['p50_ms']:.2f} / {r[high]['p99_ms']:.2f}",
                f"{r['open']['p50_ms']:.2f} / {r['open']['p99_ms']:.2f}",
                f"{r['cpu_us_per_request']:.0f}",
                f"{r['startup_s']:.1f}",
                f"{r['rss_mib']:.0f}",
            ])  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


if __name__ == "__main__":
    main()
