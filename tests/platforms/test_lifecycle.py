"""What every platform shares: close, resume, the checks of deploy and run, one outcome for many.

The contract tests run it through both real platforms; these pin down the
shared part alone, with a platform whose runs are futures.
"""

from __future__ import annotations

import asyncio

import pytest

from scanflow_agents.platforms import MemoryRunStore, PlatformError, RunRecord, RunStatus
from scanflow_agents.platforms.base import PlatformBase, check_deployable, check_parameters
from scanflow_agents.platforms.results import NodeRun, overall
from scanflow_agents.workflows import ExecutorNode, ServiceNode, Workflow

BATCH = Workflow(name="retrain", nodes=(ExecutorNode(name="fit", entry_point="fit.py"),))


class Waiting:
    """A run that ends when told to."""

    def __init__(self, run_id: str) -> None:
        self.status = RunStatus(
            run_id=run_id, workflow=BATCH.name, state="running", nodes={"fit": NodeRun(node="fit")}
        )
        self.end = asyncio.Event()

    async def execute(self) -> RunStatus:
        await self.end.wait()
        self.status.finish()
        return self.status


class Toy(PlatformBase):
    name = "toy"
    outlives = True

    def __init__(self, store: MemoryRunStore) -> None:
        super().__init__(kept_runs=10, store=store)
        self.released = 0
        self.picked: list[str] = []
        self.finished: list[RunStatus] = []
        self.on_run_finished = self.finished.append

    async def start(self, run_id: str) -> Waiting:
        run = Waiting(run_id)
        await self.runs.start(run, RunRecord.of(run.status, self.name, BATCH))
        return run

    async def _release(self) -> None:
        self.released += 1

    async def _pick_up(self, record: RunRecord) -> None:
        self.picked.append(record.status.run_id)


async def test_close_stops_following_then_releases_and_is_safe_twice() -> None:
    store = MemoryRunStore()
    async with Toy(store) as toy:
        await toy.start("r1")
    assert toy.released == 1
    await toy.close()
    assert toy.released == 2  # releasing again finds nothing: each platform's is idempotent
    assert toy.finished == []  # closing reports nothing: a later instance resumes it
    assert [r.status.run_id for r in await store.unreported("toy")] == ["r1"]


async def test_a_run_ends_reported_once_and_wait_and_status_tell_it() -> None:
    async with Toy(MemoryRunStore()) as toy:
        run = await toy.start("r1")
        assert (await toy.run_status("r1")).state == "running"
        with pytest.raises(TimeoutError):
            await toy.wait("r1", timeout=0.01)
        run.end.set()
        assert (await toy.wait("r1", timeout=5)).state == "succeeded"
    assert [s.run_id for s in toy.finished] == ["r1"]
    with pytest.raises(PlatformError) as unknown:
        await toy.run_status("nope")
    assert unknown.value.code == "not_found"


async def test_resume_reports_ended_runs_and_hands_over_unfinished_ones() -> None:
    store = MemoryRunStore()
    ended = RunStatus(run_id="ended", workflow=BATCH.name, state="cancelled", nodes={})
    going = RunStatus(run_id="going", workflow=BATCH.name, state="running", nodes={})
    for status in (ended, going):
        await store.put(RunRecord.of(status, "toy", BATCH))
    await store.put(RunRecord.of(going.model_copy(update={"run_id": "other"}), "local", BATCH))
    async with Toy(store) as toy:
        assert await toy.resume() == ["ended", "going"]
        assert [s.run_id for s in toy.finished] == ["ended"]
        assert toy.picked == ["going"]


def test_a_batch_workflow_is_not_deployed_and_parameters_name_executors() -> None:
    with pytest.raises(PlatformError, match="'retrain' is a batch workflow; run it") as batch:
        check_deployable(BATCH)
    assert batch.value.code == "invalid"
    check_deployable(
        Workflow(
            name="serve", kind="online", nodes=(ServiceNode(name="m", model_uri="models:/m/1"),)
        )
    )
    check_parameters(BATCH, {"fit": {"C": 1}})
    check_parameters(BATCH, None)
    with pytest.raises(
        PlatformError, match=r"unknown executor\(s\) \['nope'\] of workflow 'retrain'"
    ):
        check_parameters(BATCH, {"fit": {}, "nope": {}})


def test_many_outcomes_read_as_one() -> None:
    assert overall([]) == "unchanged"
    assert overall(["unchanged", "unchanged"]) == "unchanged"
    assert overall(["created", "created"]) == "created"
    assert overall(["created", "unchanged"]) == "updated"
    assert overall(["deleted"]) == "updated"
