"""Finding one chain in a big stream, and what the chain index costs per record.

``history --correlation <id>`` must find a chain in a stream of 100,000
records within a second. The correlation id lives in the payload and
JetStream filters only on subjects, so the recorder stores a copy of each
event under ``scanflow.<ns>.chains.<id>.<topic>`` (``_core/indexing.py``).
This benchmark, against its own nats-server (JetStream, file store):

1. fills the stream with ``--records`` records through the real recorder (chains
   of four: observation, decision, action, custom event; payloads of ~250 bytes)
   and reports records/s and bytes stored per record;
2. does the same for a smaller fill without the index (the recorder as it was),
   so the cost per record shows side by side;
3. times ``Client.history(correlation_id=...)`` for chains at the start, middle
   and end of the stream (what ``scanflow history --correlation`` runs), the
   whole command as a person types it (Python start included), and the scan
   it replaces (read every record and compare ids);
4. times ``Client.history(agent=..., limit=100, newest=True)``: the newest 100
   records of one agent, found by the server.

Usage: ``python bench/chains.py [--records 100000] [--json bench/results/chains.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scanflow_agents import Settings
from scanflow_agents._core.recording import Recorder
from scanflow_agents.clients import Client, connect_transport
from scanflow_agents.messages import Envelope, new_id
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.servers import NatsServer

AGENTS = ("tracker", "checker", "improver", "planner")
PAYLOAD = {
    "value": {"rps": 123.4, "p95_ms": 41.2, "errors": 0, "window": "2026-01-01T00:00:00Z"},
    "trigger": "every 5s",
    "evidence": {"features_moved": ["pixel_12", "pixel_40"], "p_value": 0.0031},
}


class UnindexedRecorder(Recorder):
    """The recorder without the chain index: the baseline of the cost per record."""

    def __init__(self, agent: str, transport: Any, subjects: Subjects, sinks: list[Any]) -> None:
        super().__init__(agent, transport, subjects, sinks, index=False)


async def fill(
    settings: Settings, records: int, *, indexed: bool
) -> tuple[float, list[str], NatsTransport]:
    """Record ``records`` events in chains of four; the seconds it took and the chain ids."""
    transport = await connect_transport(settings, name="bench-fill")
    assert isinstance(transport, NatsTransport)
    subjects = Subjects(settings.namespace)
    kind = Recorder if indexed else UnindexedRecorder
    recorders = [kind(agent, transport, subjects, []) for agent in AGENTS]
    tasks = [asyncio.create_task(r.run()) for r in recorders]
    chains: list[str] = []
    started = time.perf_counter()
    for _ in range(records // 4):
        chain = new_id()
        chains.append(chain)
        await recorders[0].record("observation", "window", PAYLOAD, correlation_id=chain)
        await recorders[1].record("decision", "drift", PAYLOAD, correlation_id=chain)
        await recorders[2].record("action", "retrain", PAYLOAD, correlation_id=chain)
        recorders[3].publish(
            subjects.event("run.train.succeeded"),
            Envelope(
                kind="event",
                source="planner",
                target="run.train.succeeded",
                correlation_id=chain,
                payload=PAYLOAD,
            ),
        )
        # Back-pressure as a real agent never needs it: this loop produces far
        # faster than any sensor, and the recorders' queues are bounded.
        while any(len(r.backlog) > 2000 for r in recorders):  # noqa: ASYNC110 (polls a deque)
            await asyncio.sleep(0.002)
    for recorder in recorders:
        await recorder.flush(600)
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    return elapsed, chains, transport


async def stream_bytes(transport: NatsTransport) -> tuple[int, int]:
    info = await transport.js.stream_info(transport.streams[0].name)
    return int(info.state.bytes), int(info.state.messages)


async def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work
    return time.perf_counter() - started, result


async def scan(client: Client, correlation_id: str) -> list[dict[str, Any]]:
    """The way without an index: read every event and keep those of the chain."""
    found = []
    for _, data in await client.transport.history(client.subjects.all_events, limit=10**7):
        envelope = Envelope.decode(data)
        if envelope.correlation_id == correlation_id:
            found.append(envelope)
    return [{"id": e.id} for e in found]


async def measure(records: int, baseline: int) -> dict[str, Any]:
    results: dict[str, Any] = {"records": records}
    with NatsServer() as server:
        base = Settings.defaults()
        nats = base.nats.model_copy(update={"url": server.url})

        # 2. the baseline first, in its own namespace (its own stream)
        plain = base.model_copy(update={"namespace": "plain", "nats": nats})
        seconds, _, transport = await fill(plain, baseline, indexed=False)
        size, messages = await stream_bytes(transport)
        await transport.close()
        results["without_index"] = {
            "records": baseline,
            "records_per_s": round(baseline / seconds),
            "messages": messages,
            "bytes_per_record": round(size / baseline),
        }
        indexed = base.model_copy(update={"namespace": "indexed", "nats": nats})
        seconds, _, transport = await fill(indexed, baseline, indexed=True)
        size, messages = await stream_bytes(transport)
        await transport.close()
        results["with_index_small"] = {
            "records": baseline,
            "records_per_s": round(baseline / seconds),
            "messages": messages,
            "bytes_per_record": round(size / baseline),
        }

        # 1. the big stream
        settings = base.model_copy(update={"namespace": "bench", "nats": nats})
        seconds, chains, transport = await fill(settings, records, indexed=True)
        size, messages = await stream_bytes(transport)
        results["with_index"] = {
            "records": records,
            "records_per_s": round(records / seconds),
            "messages": messages,
            "bytes_per_record": round(size / records),
            "fill_s": round(seconds, 1),
        }
        client = Client(transport, namespace="bench")

        # 3. chain lookups: first, middle and last chains, and a spread between
        picks = [chains[0], chains[len(chains) // 2], chains[-1]]
        picks += chains[:: max(1, len(chains) // 17)][:17]
        lookups = []
        for chain in picks:
            elapsed, found = await timed(client.history(correlation_id=chain, kinds=None))
            assert len(found) == 4, f"chain {chain}: {len(found)} records"
            lookups.append(elapsed * 1000)
        results["chain_lookup_ms"] = {
            "p50": round(statistics.median(lookups), 1),
            "max": round(max(lookups), 1),
            "count": len(lookups),
        }
        elapsed, found = await timed(scan(client, chains[len(chains) // 2]))
        assert len(found) == 4
        results["scan_lookup_ms"] = round(elapsed * 1000)

        # 3b. the whole command, as a person types it: Python start, connect, read, print
        walls = []
        for chain in picks[:3]:
            started = time.perf_counter()
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "scanflow_agents.runtime",
                    "--nats",
                    server.url,
                    "-n",
                    "bench",
                    "history",
                    "--correlation",
                    chain,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            walls.append((time.perf_counter() - started) * 1000)
            assert done.stdout.count(chain) == 4, done.stdout
        results["history_command_ms"] = round(statistics.median(walls))

        # 4. the newest 100 records of one agent, filtered and limited by the server
        newest = []
        for _ in range(5):
            elapsed, found = await timed(client.history(agent="checker", limit=100, newest=True))
            assert len(found) == 100
            assert found[-1]["correlation_id"] == chains[-1]
            newest.append(elapsed * 1000)
        results["newest_100_of_agent_ms"] = round(statistics.median(newest), 1)
        await transport.close()
    results["environment"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    return results


def report(results: dict[str, Any]) -> str:
    plain, small, big = results["without_index"], results["with_index_small"], results["with_index"]
    lookup = results["chain_lookup_ms"]
    return "\n".join(
        [
            f"{'what':<44} {'value':>12}",
            f"{'records/s without index (' + str(plain['records']) + ')':<44} "
            f"{plain['records_per_s']:>12,}",
            f"{'records/s with index (' + str(small['records']) + ')':<44} "
            f"{small['records_per_s']:>12,}",
            f"{'bytes stored per record, without / with':<44} "
            f"{plain['bytes_per_record']:>5} / {small['bytes_per_record']:<5}",
            f"{'fill of ' + str(big['records']) + ' records (s)':<44} {big['fill_s']:>12}",
            f"{'chain lookup p50 / max (ms)':<44} {lookup['p50']:>5} / {lookup['max']:<5}",
            f"{'chain by scanning the stream (ms)':<44} {results['scan_lookup_ms']:>12,}",
            f"{'scanflow history --correlation, whole (ms)':<44} "
            f"{results['history_command_ms']:>12,}",
            f"{'newest 100 records of one agent (ms)':<44} {results['newest_100_of_agent_ms']:>12}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=20_000, help="Records of the cost runs.")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    results = asyncio.run(measure(args.records, args.baseline))
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(0 if results["chain_lookup_ms"]["max"] < 1000 else 1)


if __name__ == "__main__":
    main()
