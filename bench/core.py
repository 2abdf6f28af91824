"""Core benchmark: agent calls and reactions against raw NATS and the original HTTP design.

One run, on loopback, against one nats-server (JetStream) started here:

1. raw nats-py request/reply to a responder process;
2. the original Scanflow design: aiohttp POSTing JSON to FastAPI on uvicorn (one worker);
3. an actuator call between two agent processes through the framework (validation,
   envelope, idempotency, recording of the action event included), answered once
   the action record is stored (the default), then once it is sent
   (``settings.agent.reply_after = "sent"``);
4. event -> rule -> remote actuator: an event published to the namespace's stream,
   a rule in one agent process calling an actuator in another;
5. memory of an idle agent process, and of one process running 1, 10 and 50 agents;
6. section 3's stored-mode call on a three-server JetStream cluster, the stream
   kept on 1 server and on all 3 (``settings.nats.replicas``).

Sections 1-3 measure p50/p99 of sequential calls and calls/s with 64 in flight;
the callers all run in this process, the callees each in their own process.

Usage: ``python bench/core.py [--quick] [--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import psutil
from _agents import HEAVY_MODULES, TICK_TOPIC
from _measure import measure, summary
from _procs import (
    AGENTS_FILE,
    PEERS,
    Child,
    Children,
    free_port,
    python,
    scanflow,
    sigterm_exits,
)
from _report import goals, publish, table

from scanflow_agents import Envelope, Settings
from scanflow_agents._kit import loops
from scanflow_agents.clients import Client, connect_transport
from scanflow_agents.messages import new_id
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Message, Transport
from scanflow_agents.transports.clusters import NatsCluster
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.servers import NatsServer, find_nats_server

NAMESPACE = "bench"
ECHO_SUBJECT = "bench.echo"
PAYLOAD = {"replicas": 3, "service": "digits"}
MODULES_ENV = "SCANFLOW_BENCH_MODULES_FILE"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "core.json"
HOST_SIZES = (1, 10, 50)
SENT = "scaler-sent"  # the scaler with settings.agent.reply_after = "sent"


@dataclass(frozen=True)
class Plan:
    """How much work each section does."""

    calls: int  # sequential calls timed per request/reply section
    warmup: int  # untimed calls before them
    burst: int  # calls of the 64-in-flight throughput run
    inflight: int
    events: int  # paced events of section 4
    event_gap: float  # seconds between two events
    settle: float  # seconds an idle process runs before its memory is read


FULL = Plan(
    calls=2000, warmup=200, burst=10_000, inflight=64, events=1000, event_gap=0.01, settle=3.0
)
QUICK = Plan(calls=300, warmup=50, burst=1000, inflight=64, events=200, event_gap=0.005, settle=1.0)


# -- 1. raw NATS ------------------------------------------------------------------------


async def bench_raw_nats(url: str, plan: Plan, children: Children) -> dict[str, Any]:
    import nats

    responder = children.start("echo", python(PEERS, "echo", url, ECHO_SUBJECT))
    responder.wait_line("READY", 30)
    nc = await nats.connect(url, name="bench-caller")
    data = json.dumps(PAYLOAD).encode()

    async def call() -> object:
        reply = await nc.request(ECHO_SUBJECT, data, timeout=10)
        return json.loads(reply.data)

    try:
        return await measured(call, plan, responder.pid)
    finally:
        await nc.drain()
        children.stop(responder)


# -- 2. the original HTTP design --------------------------------------------------------


async def bench_http(plan: Plan, children: Children) -> dict[str, Any]:
    import aiohttp

    port = free_port()
    server = children.start("http", python(PEERS, "http", str(port)))
    server.wait_port(port, 30)
    url = f"http://127.0.0.1:{port}/scale"
    # One keep-alive pool sized to the concurrency, as a tuned HTTP caller would use.
    connector = aiohttp.TCPConnector(limit=plan.inflight)
    session = aiohttp.ClientSession(connector=connector)

    async def call() -> object:
        async with session.post(url, json=PAYLOAD) as response:
            response.raise_for_status()
            return await response.json()

    try:
        return await measured(call, plan, server.pid)
    finally:
        await session.close()
        children.stop(server)


# -- 3. agent to agent ------------------------------------------------------------------


async def bench_agents(
    transport: NatsTransport,
    plan: Plan,
    callee: int,
    name: str = "scaler",
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    client = Client(transport, namespace=namespace, name="bench")
    made = 0

    async def call() -> object:
        nonlocal made
        made += 1
        return await client.call(name, "scale", replicas=3)

    result = await measured(call, plan, callee)
    result["caller"] = "Client.call"
    # Every call answered ok must have its action record in the stream: count
    # them there, after the run (and after the callee had time to confirm what
    # it sent), not in the agent's own counters.
    await asyncio.sleep(1.0)
    stored = await stored_records(transport, Subjects(namespace).event(f"action.{name}.scale"))
    result["calls_made"] = made
    result["records_stored"] = stored
    result["records_per_call"] = round(stored / made, 4)
    return result


async def measured(call: Any, plan: Plan, callee: int) -> dict[str, Any]:
    """:func:`measure`, plus the CPU time the callee process and this one spent per call.

    CPU time per call holds up on a busy machine, where wall-clock rates do not:
    it is what the ratios of calls/s would be if each side had a core of its own.
    """
    made = 0

    async def counted() -> object:
        nonlocal made
        made += 1
        return await call()

    process = psutil.Process(callee)
    before, mine = process.cpu_times(), time.process_time()
    result = await measure(
        counted, calls=plan.calls, warmup=plan.warmup, burst=plan.burst, inflight=plan.inflight
    )
    after = process.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    result["callee_cpu_us_per_call"] = round(used / made * 1e6, 1)
    result["caller_cpu_us_per_call"] = round((time.process_time() - mine) / made * 1e6, 1)
    return result


async def stored_records(transport: NatsTransport, subject: str) -> int:
    """How many messages the event stream holds on ``subject``."""
    info = await transport.js.stream_info(transport.streams[0].name, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


# -- 4. event -> rule -> remote actuator ------------------------------------------------


class ActionObserver:
    """Matches action events to the source events that caused them, by correlation id."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.started: dict[str, float] = {}  # the actuator's own start time
        self.arrived: dict[str, float] = {}  # the action event reaching this process
        self.expected = 0
        self.all_arrived = asyncio.Event()

    async def on_action(self, message: Message) -> None:
        now = time.monotonic()
        envelope = Envelope.decode(message.data)
        cid = envelope.correlation_id
        if cid not in self.sent:
            return  # an action of an earlier section
        self.started[cid] = envelope.payload["result"]["started"]
        self.arrived[cid] = now
        # Counted against the planned total: while publishing, every event sent
        # so far may already have arrived, which does not mean the run is over.
        if len(self.arrived) == self.expected:
            self.all_arrived.set()

    def reset(self, expected: int) -> None:
        self.expected = expected
        self.sent.clear()
        self.started.clear()
        self.arrived.clear()
        self.all_arrived.clear()


async def publish_paced(transport: Transport, observer: ActionObserver, count: int, gap: float):
    """Publish ``count`` events ``gap`` seconds apart, as a source (or ``Agent.emit``) would."""
    subject = Subjects(NAMESPACE).event(TICK_TOPIC)
    start = time.monotonic()
    for i in range(count):
        # A fixed schedule: a slow reaction does not slow the source down.
        await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
        cid = new_id()
        data = Envelope(
            kind="event",
            source="bench",
            target=TICK_TOPIC,
            correlation_id=cid,
            payload={"n": i % 5 + 1},
        ).encode()
        observer.sent[cid] = time.monotonic()
        await transport.publish_durable(subject, data)


async def bench_events(transport: Transport, plan: Plan) -> dict[str, Any]:
    observer = ActionObserver()
    subjects = Subjects(NAMESPACE)
    sub = await transport.subscribe(subjects.event("action.scaler.scale"), observer.on_action)
    await transport.flush()
    try:
        observer.reset(expected=20)
        await publish_paced(transport, observer, 20, plan.event_gap)  # warm-up
        async with asyncio.timeout(10):
            await observer.all_arrived.wait()
        observer.reset(expected=plan.events)
        await publish_paced(transport, observer, plan.events, plan.event_gap)
        with contextlib.suppress(TimeoutError):  # what did not arrive is reported as lost
            async with asyncio.timeout(10):
                await observer.all_arrived.wait()
    finally:
        await sub.unsubscribe()
    done = list(observer.arrived)
    return {
        "events": plan.events,
        "gap_ms": plan.event_gap * 1000,
        "lost": plan.events - len(done),
        "to_actuator_start": summary([observer.started[c] - observer.sent[c] for c in done]),
        "to_action_event": summary([observer.arrived[c] - observer.sent[c] for c in done]),
    }


# -- 5. memory --------------------------------------------------------------------------


async def settled_memory(
    children: Children,
    client: Client,
    label: str,
    argv: list[str],
    names: list[str],
    plan: Plan,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """RSS of an agent process once all its agents answer and it has idled a while."""
    with tempfile.NamedTemporaryFile(prefix="bench-modules-", suffix=".txt") as modules:
        child = children.start(label, argv, env={**(env or {}), MODULES_ENV: modules.name})
        await agents_up(client, names, [child])
        await asyncio.sleep(plan.settle)
        info = psutil.Process(child.pid).memory_full_info()
        code = children.stop(child)
        loaded = modules.read().decode().split()
    return {
        "agents": len(names),
        "rss_mib": round(info.rss / 2**20, 2),
        "uss_mib": round(info.uss / 2**20, 2),
        "heavy_modules": {name: name in loaded for name in HEAVY_MODULES},
        "exit_code": code,
    }


def without_aiohttp(folder: str) -> dict[str, str]:
    """Environment of a child that cannot import aiohttp, as with only the core dependencies.

    nats-py imports aiohttp (its WebSocket transport) whenever it is installed,
    and this environment has it for the HTTP section: the shadow package shows
    what an agent costs where it is not.
    """
    shadow = Path(folder) / "aiohttp"
    shadow.mkdir()
    (shadow / "__init__.py").write_text('raise ImportError("hidden by the benchmark")\n')
    return {"PYTHONPATH": os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))}


async def bench_memory(url: str, plan: Plan, children: Children, client: Client):
    argv = scanflow(url, NAMESPACE, "--log-level", "WARNING", "run", f"{AGENTS_FILE}:Idle")
    idle = await settled_memory(children, client, "idle", argv, ["idle"], plan)
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as folder:
        core_only = await settled_memory(
            children, client, "idle-core", argv, ["idle"], plan, env=without_aiohttp(folder)
        )
    hosts = {}
    for count in HOST_SIZES:
        names = [f"idle-{i}" for i in range(count)]
        argv = python(PEERS, "host", url, NAMESPACE, str(count))
        hosts[str(count)] = await settled_memory(
            children, client, f"host{count}", argv, names, plan
        )
    first, last = hosts[str(HOST_SIZES[0])], hosts[str(HOST_SIZES[-1])]
    per_agent = (last["rss_mib"] - first["rss_mib"]) / (HOST_SIZES[-1] - HOST_SIZES[0])
    return {
        "idle_agent": idle,
        "idle_agent_core_deps_only": core_only,
        "hosts": hosts,
        "per_agent_rss_mib": round(per_agent, 3),
    }


# -- the run ----------------------------------------------------------------------------


def settings_for(url: str) -> Settings:
    # Built from values, not the environment: the benchmark must not pick up
    # a developer's SCANFLOW_* variables.
    return Settings.model_validate({"namespace": NAMESPACE, "nats": {"url": url}})


async def run_agent_sections(url: str, plan: Plan, children: Children) -> dict[str, Any]:
    """Sections 3-5: they share one framework connection in this process."""
    transport = await connect_transport(settings_for(url), name="bench")
    assert isinstance(transport, NatsTransport)
    client = Client(transport, namespace=NAMESPACE, name="bench")
    results: dict[str, Any] = {}
    try:
        scaler = children.start("scaler", scanflow(url, NAMESPACE, "run", f"{AGENTS_FILE}:Scaler"))
        # The same agent answering once its record is sent, not acknowledged.
        sent = children.start(
            "scaler-sent",
            scanflow(url, NAMESPACE, "run", f"{AGENTS_FILE}:Scaler", "--name", SENT),
            env={"SCANFLOW_AGENT__REPLY_AFTER": "sent"},
        )
        watcher = children.start(
            "watcher", scanflow(url, NAMESPACE, "run", f"{AGENTS_FILE}:Watcher")
        )
        await agents_up(client, ["scaler", SENT, "watcher"], [scaler, sent, watcher])
        progress("3/6 agent actuator calls (reply after the record is stored, then sent)")
        results["agents"] = await bench_agents(transport, plan, scaler.pid)
        results["agents_sent"] = await bench_agents(transport, plan, sent.pid, SENT)
        progress("4/6 event -> rule -> remote actuator")
        results["event_to_actuator"] = await bench_events(transport, plan)
        children.stop_all()
        progress("5/6 memory")
        results["memory"] = await bench_memory(url, plan, children, client)
    finally:
        await transport.close()
    return results


async def agents_up(client: Client, names: list[str], processes: list[Child]) -> None:
    """Wait until the agents ``names`` answer; fail at once, with its stderr, if a process died.

    Bounded at 180 s: on a three-server cluster an agent's start creates each
    stream and bucket as a replicated group, and on a loaded 2-core machine
    that once took more than a minute.
    """
    deadline = time.monotonic() + 180
    while True:
        for process in processes:
            process.check_alive()
        try:
            await client.wait_for_agents(names, timeout=5)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                tails = "\n".join(f"{p.label}: {p.stderr_tail(800)}" for p in processes)
                raise TimeoutError(f"agents {names} not running after 180 s:\n{tails}") from None


async def bench_cluster(plan: Plan, children: Children) -> dict[str, Any]:
    """Section 6: agent calls on a three-server cluster, the stream with 1 and with 3 copies.

    Each in a namespace of its own (a namespace's stream has one replica count).
    """
    results: dict[str, Any] = {}
    async with NatsCluster() as cluster:
        for replicas in (1, 3):
            namespace = f"{NAMESPACE}-r{replicas}"
            settings = Settings.model_validate(
                {"namespace": namespace, "nats": {"url": cluster.url, "replicas": replicas}}
            )
            transport = await connect_transport(settings, name="bench")
            assert isinstance(transport, NatsTransport)
            try:
                scaler = children.start(
                    f"scaler-r{replicas}",
                    scanflow(cluster.url, namespace, "run", f"{AGENTS_FILE}:Scaler"),
                    env={"SCANFLOW_NATS__REPLICAS": str(replicas)},
                )
                client = Client(transport, namespace=namespace, name="bench")
                await agents_up(client, ["scaler"], [scaler])
                results[f"replicas_{replicas}"] = await bench_agents(
                    transport, plan, scaler.pid, namespace=namespace
                )
                children.stop(scaler)
            finally:
                await transport.close()
    return results


async def run_all(url: str, plan: Plan, children: Children) -> dict[str, Any]:
    progress("1/6 raw NATS request/reply")
    results: dict[str, Any] = {"raw_nats": await bench_raw_nats(url, plan, children)}
    progress("2/6 HTTP: aiohttp -> FastAPI on uvicorn")
    results["http"] = await bench_http(plan, children)
    results.update(await run_agent_sections(url, plan, children))
    progress("6/6 agent calls on a three-server cluster, 1 and 3 replicas")
    results["cluster"] = await bench_cluster(plan, children)
    http, raw = results["http"], results["raw_nats"]
    for agents in (results["agents"], results["agents_sent"]):
        agents["p50_vs_raw_nats"] = round(agents["p50_ms"] / raw["p50_ms"], 3)
        agents["calls_per_s_vs_http"] = round(agents["calls_per_s"] / http["calls_per_s"], 3)
        agents["calls_per_s_vs_raw_nats"] = round(agents["calls_per_s"] / raw["calls_per_s"], 3)
        # What calls/s would compare as if the callee had a core to itself.
        agents["callee_cpu_vs_http"] = round(
            agents["callee_cpu_us_per_call"] / http["callee_cpu_us_per_call"], 3
        )
    return results


def progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def environment(plan: Plan, quick: bool) -> dict[str, Any]:
    server = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True)
    return {
        "quick": quick,
        "plan": asdict(plan),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "nats_server": server.stdout.strip(),
        "versions": {
            name: metadata.version(name)
            for name in ("nats-py", "pydantic", "aiohttp", "fastapi", "uvicorn")
        },
        # The event loop of every process here; uvicorn's HTTP parser (h11 without httptools).
        "event_loop": loops.chosen("auto"),
        "httptools": find_spec("httptools") is not None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    sigterm_exits()
    children = Children()
    started = time.monotonic()
    try:
        with NatsServer() as server:
            try:
                # The callers run on the loop the agents run on (see _kit/loops.py).
                results = loops.run(lambda: run_all(server.url, plan, children))
            finally:
                children.stop_all()  # before the server, so agents drain cleanly
    finally:
        children.stop_all()
    results["goals"] = goals(results)
    results["environment"] = environment(plan, args.quick)
    results["environment"]["seconds"] = round(time.monotonic() - started, 1)
    publish(results, args.json, table(results))


if __name__ == "__main__":
    main()
