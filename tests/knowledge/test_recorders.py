"""The decision audit trail: non-blocking writes, queries, and MLflow outages."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scanflow_agents.knowledge import KnowledgeClient, MlflowRecorder, MlflowServer
from scanflow_agents.settings import MlflowSettings
from scanflow_agents.testing import eventually

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(agent: str, kind: str, n: int, correlation_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "kind": kind,
        "agent": agent,
        "name": {"observation": "poll", "decision": "drift", "action": "retrain"}[kind],
        "correlation_id": correlation_id,
        "time": (T0 + timedelta(seconds=n)).isoformat(),
        "payload": {"n": n},
        **extra,
    }


async def test_history_by_agent_correlation_and_kind(
    knowledge: KnowledgeClient, unique: str
) -> None:
    recorder = MlflowRecorder(knowledge, prefix=f"audit-{unique}", batch_size=4)
    agent = "checker"
    events = [
        event(agent, kind, n, f"c{n // 3}", duration=0.01 * n)
        for n, kind in enumerate(["observation", "decision", "action"] * 4)
    ]
    events[5]["error"] = "permission denied"
    events[5]["outcome"] = "failed"
    await recorder.start()
    started = time.perf_counter()
    for item in events:
        recorder.record(item)
    assert time.perf_counter() - started < 0.05  # record() only enqueues
    recorder.record(event("tracker", "observation", 0, "c0"))
    await recorder.aclose()
    assert recorder.pending == 0

    assert await recorder.history(agent) == events
    assert await recorder.history(agent, limit=5) == events[-5:]
    assert await recorder.history(agent, correlation_id="c1") == events[3:6]
    assert await recorder.history(agent, kinds=["decision"]) == events[1::3]
    assert await recorder.history(agent, correlation_id="c2", kinds={"action", "decision"}) == [
        events[7],
        events[8],
    ]
    assert [e["agent"] for e in await recorder.history("tracker")] == ["tracker"]
    assert await recorder.history("nobody") == []


async def test_large_payloads_and_many_correlations(
    knowledge: KnowledgeClient, unique: str
) -> None:
    recorder = MlflowRecorder(knowledge, prefix=f"audit-{unique}", batch_size=500)
    big = event("planner", "action", 0, "big", payload={"blob": "x" * 30_000})
    many = [event("planner", "observation", n, f"{'k' * 60}-{n}") for n in range(1, 300)]
    for item in [big, *many]:
        recorder.record(item)
    await recorder.flush()
    assert await recorder.history("planner", correlation_id="big") == [big]
    assert await recorder.history("planner", limit=1000) == [big, *many]


def test_invalid_events_are_refused_at_once(knowledge: KnowledgeClient) -> None:
    recorder = MlflowRecorder(knowledge)
    with pytest.raises(ValueError, match="lacks agent"):
        recorder.record({"id": "1", "kind": "decision", "name": "r", "time": T0.isoformat()})
    with pytest.raises(ValueError, match="has kind 'guess'"):
        recorder.record(event("a", "decision", 0, "c") | {"kind": "guess"})
    assert recorder.pending == 0


async def test_events_survive_an_mlflow_outage(
    make_mlflow_server: Callable[[], MlflowServer],
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_mlflow_server()
    await server.astart()
    client = KnowledgeClient(MlflowSettings(tracking_uri=server.url, retries=0))
    recorder = MlflowRecorder(
        client, prefix=f"outage-{unique}", flush_interval=0.05, retry_interval=0.2
    )
    await recorder.start()
    before = [event("tracker", "observation", n, "before") for n in range(3)]
    for item in before:
        recorder.record(item)
    await eventually(lambda: recorder.pending == 0, timeout=20)

    await server.astop()
    during = [event("tracker", "decision", n, "during") for n in range(3, 8)]
    with caplog.at_level(logging.WARNING, logger="scanflow_agents.knowledge.recorders"):
        for item in during:
            recorder.record(item)
        await eventually(lambda: "MLflow unreachable at" in caplog.text, timeout=20)
        assert recorder.pending == len(during)
        await server.astart()  # same port, same backend store
        await eventually(lambda: recorder.pending == 0, timeout=20)
        assert "is back after" in caplog.text
    await recorder.aclose()
    assert await recorder.history("tracker") == before + during
    await client.aclose()
