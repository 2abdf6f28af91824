"""Incremental reads: each run and metric point once, across polls and restarts."""

from __future__ import annotations

import json
import time

from scanflow_agents.knowledge import (
    NODE_TAG,
    WORKFLOW_TAG,
    IncrementalRunReader,
    KnowledgeClient,
    latest_run,
    metric_window,
)


def now_ms() -> int:
    return int(time.time() * 1000)


async def make_runs(
    client: KnowledgeClient,
    experiment_id: str,
    names: list[str],
    *,
    finished: bool = True,
    tags: dict[str, str] | None = None,
    accuracy: float | None = None,
) -> list[str]:
    ids = []
    for name in names:
        run_id = await client.create_run(experiment_id, run_name=name, tags=tags)
        if accuracy is not None:
            await client.log_batch(run_id, metrics=[("accuracy", accuracy, now_ms(), 0)])
        if finished:
            await client.end_run(run_id)
        ids.append(run_id)
    return ids


async def test_each_new_run_is_returned_once(knowledge: KnowledgeClient, unique: str) -> None:
    experiment_id = await knowledge.experiment_id(f"inc-{unique}", create=True)
    assert experiment_id is not None
    reader = IncrementalRunReader(knowledge, [f"inc-{unique}"])
    first = await make_runs(knowledge, experiment_id, ["a", "b", "c"])
    poll = await reader.poll()
    # Runs come in start-time order; runs started in the same millisecond in any order.
    assert sorted(r.run_id for r in poll.runs) == sorted(first)
    assert [r.start_time for r in poll.runs] == sorted(r.start_time for r in poll.runs)
    assert sorted(poll.finished) == sorted(first)
    assert (await reader.poll()).runs == []
    second = await make_runs(knowledge, experiment_id, ["d", "e"])
    poll = await reader.poll()
    assert sorted(r.run_id for r in poll.runs) == sorted(second)
    assert sorted(r.name for r in poll.runs) == ["d", "e"]
    assert (await reader.poll()).runs == []


async def test_runs_sharing_a_start_time_and_late_runs_are_not_lost(
    knowledge: KnowledgeClient, unique: str
) -> None:
    experiment_id = await knowledge.experiment_id(f"tie-{unique}", create=True)
    assert experiment_id is not None
    reader = IncrementalRunReader(knowledge, experiment_ids=[experiment_id], lookback=60)
    stamp = now_ms()
    tied = [await knowledge.create_run(experiment_id, start_time=stamp) for _ in range(3)]
    assert {r.run_id for r in (await reader.poll()).runs} == set(tied)
    # Same start time again, and one stamped 10 s in the past (a slow clock),
    # both becoming visible after the poll above.
    late = [
        await knowledge.create_run(experiment_id, start_time=stamp),
        await knowledge.create_run(experiment_id, start_time=stamp - 10_000),
    ]
    assert {r.run_id for r in (await reader.poll()).runs} == set(late)
    assert (await reader.poll()).runs == []


async def test_metric_points_of_a_running_run_arrive_once(
    knowledge: KnowledgeClient, unique: str
) -> None:
    experiment_id = await knowledge.experiment_id(f"pts-{unique}", create=True)
    assert experiment_id is not None
    reader = IncrementalRunReader(knowledge, [f"pts-{unique}"], metrics=["loss"])
    run_id = await knowledge.create_run(experiment_id, run_name="training")
    base = now_ms()
    await knowledge.log_batch(run_id, metrics=[("loss", 1.0, base, 0), ("loss", 0.8, base + 1, 1)])
    poll = await reader.poll()
    assert [r.run_id for r in poll.runs] == [run_id]
    assert [(p.step, p.value) for p in poll.points] == [(0, 1.0), (1, 0.8)]
    assert poll.finished == []
    assert (await reader.poll()).points == []
    await knowledge.log_batch(run_id, metrics=[("loss", 0.5, base + 2, 2), ("other", 3, base, 0)])
    poll = await reader.poll()
    assert poll.runs == []
    assert [(p.step, p.value) for p in poll.points] == [(2, 0.5)]
    await knowledge.log_batch(run_id, metrics=[("loss", 0.4, base + 3, 3)])
    await knowledge.end_run(run_id)
    poll = await reader.poll()
    assert [(p.step, p.value) for p in poll.points] == [(3, 0.4)]
    assert poll.finished == [run_id]
    assert reader.state()["open"] == {}
    final = await reader.poll()
    assert (final.points, final.finished) == ([], [])


async def test_restored_reader_does_not_read_again(knowledge: KnowledgeClient, unique: str) -> None:
    experiment_id = await knowledge.experiment_id(f"rst-{unique}", create=True)
    assert experiment_id is not None
    reader = IncrementalRunReader(knowledge, [f"rst-{unique}"], metrics=["loss"])
    await make_runs(knowledge, experiment_id, ["old-1", "old-2"])
    running = await knowledge.create_run(experiment_id, run_name="running")
    await knowledge.log_batch(running, metrics=[("loss", 1.0, now_ms(), 0)])
    assert len((await reader.poll()).runs) == 3
    # The state survives a JSON round trip, as it would through NATS KV.
    saved = json.loads(json.dumps(reader.state()))

    restarted = IncrementalRunReader(knowledge, [f"rst-{unique}"], metrics=["loss"])
    restarted.restore(saved)
    assert (await restarted.poll()).runs == []
    new = await make_runs(knowledge, experiment_id, ["new"])
    await knowledge.log_batch(running, metrics=[("loss", 0.5, now_ms() + 1, 1)])
    poll = await restarted.poll()
    assert [r.run_id for r in poll.runs] == new
    assert [(p.run_id, p.value) for p in poll.points] == [(running, 0.5)]


async def test_filter_and_since_limit_what_is_read(knowledge: KnowledgeClient, unique: str) -> None:
    experiment_id = await knowledge.experiment_id(f"flt-{unique}", create=True)
    assert experiment_id is not None
    await make_runs(knowledge, experiment_id, ["before"], tags={NODE_TAG: "train"})
    reader = IncrementalRunReader(
        knowledge, [f"flt-{unique}"], f"tags.`{NODE_TAG}` = 'train'", since=now_ms() + 1
    )
    await make_runs(knowledge, experiment_id, ["skip"], tags={NODE_TAG: "serve"})
    wanted = await make_runs(knowledge, experiment_id, ["take"], tags={NODE_TAG: "train"})
    assert [r.run_id for r in (await reader.poll()).runs] == wanted


async def test_missing_experiment_reads_as_empty_until_it_exists(
    knowledge: KnowledgeClient, unique: str
) -> None:
    reader = IncrementalRunReader(knowledge, [f"later-{unique}"])
    assert (await reader.poll()).runs == []
    experiment_id = await knowledge.experiment_id(f"later-{unique}", create=True)
    assert experiment_id is not None
    ids = await make_runs(knowledge, experiment_id, ["x"])
    assert [r.run_id for r in (await reader.poll()).runs] == ids


async def test_latest_run_and_metric_window(knowledge: KnowledgeClient, unique: str) -> None:
    experiment_id = await knowledge.experiment_id(f"win-{unique}", create=True)
    assert experiment_id is not None
    tags = {WORKFLOW_TAG: "mnist", NODE_TAG: "predict"}
    old = await knowledge.create_run(experiment_id, start_time=now_ms() - 3_600_000, tags=tags)
    await knowledge.log_batch(old, metrics=[("accuracy", 0.5, now_ms(), 0)])
    recent = await make_runs(knowledge, experiment_id, ["p1", "p2"], tags=tags, accuracy=0.9)
    await make_runs(knowledge, experiment_id, ["other"], tags={WORKFLOW_TAG: "other"})
    points = await metric_window(
        knowledge, [experiment_id], "accuracy", workflow="mnist", node="predict", window=600
    )
    assert sorted((p.run_id, p.value) for p in points) == sorted((rid, 0.9) for rid in recent)
    latest = await latest_run(knowledge, [experiment_id], f"tags.`{WORKFLOW_TAG}` = 'mnist'")
    assert latest is not None
    assert latest.run_id in recent  # the two may share a start millisecond
    assert latest.tags[NODE_TAG] == "predict"
    assert await latest_run(knowledge, [experiment_id], "tags.missing = 'x'") is None
