"""The platform contract, run against the local platform and the Kubernetes one alike.

The same scenarios on both: run a DAG, fail a step and skip its dependants,
cancel, time out, deploy, scale, redeploy (and roll back a model that never
gets ready), delete, and restart mid-run on the same run store. Locally the
steps and model servers are real processes; on Kubernetes the kmock emulator
stores the objects and this module plays the controllers (a Job controller
that finishes a step as its command says, a Deployment controller that
completes rollouts and stalls those of a "broken" model).

Where the platforms differ by design, the bed says so: local runs cannot
outlive the process that started them (a restart reports them cancelled),
cluster runs can (a restart follows them to the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scanflow_agents.platforms import MemoryRunStore, Platform, RunStatus, RunStore
from scanflow_agents.platforms.kubernetes import KubernetesPlatform, KubernetesPlatformSettings
from scanflow_agents.platforms.local import LocalPlatform, LocalPlatformSettings
from scanflow_agents.testing import eventually
from scanflow_agents.workflows import Workflow, load_workflow

from .kubernetes.conftest import (
    NAMESPACE,
    TEAM,
    Cluster,
    DeploymentController,
    EmulatedController,
)
from .kubernetes.emulator import AdmittingEmulator

# A step: --outcome ok (leave a file in the run folder, after checking the one its
# upstream left), fail (exit 3) or sleep (until killed or its deadline).
STEP = """
import os, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
run_dir = os.environ["SCANFLOW_RUN_DIR"]
needs = args.get("--needs")
if needs and not os.path.exists(os.path.join(run_dir, needs + ".done")):
    sys.exit(4)
outcome = args.get("--outcome", "ok")
if outcome == "sleep":
    time.sleep(60)
if outcome == "fail":
    sys.exit(3)
open(os.path.join(run_dir, os.environ["SCANFLOW_NODE"] + ".done"), "w").write("ok")
"""


@dataclass
class Bed:
    """One platform under the contract, and what differs about it."""

    kind: str
    make: Callable[[RunStore | None], Platform]
    image: str | None
    models: dict[str, str]
    outlives: bool
    finished: list[RunStatus] = field(default_factory=list)


@pytest.fixture(params=["local", "kubernetes"])
async def bed(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    digits: dict[str, Any],
    kmock: AdmittingEmulator,
) -> AsyncIterator[Bed]:
    """A platform bed: local processes, or the emulator with controllers played here."""
    (tmp_path / "step.py").write_text(STEP)
    if request.param == "local":
        settings = LocalPlatformSettings(
            base_dir=tmp_path / "platform",
            tracking_uri=digits["tracking_uri"],
            report_interval=60,
            start_timeout=30,
        )
        yield Bed(
            "local",
            lambda store: LocalPlatform(settings, store=store),
            None,
            {"v1": digits["uris"]["v1"], "v2": digits["uris"]["v2"]},
            outlives=False,
        )
        return
    emulator = kmock
    cluster = Cluster(emulator)
    cluster.serve("deployments", "services", "configmaps", "pods", "events", "jobs")
    k8s = KubernetesPlatformSettings(
        host=str(emulator.url).rstrip("/"),
        team=TEAM,
        poll_interval=0.02,
        rollout_deadline=5,
        tracking_uri="http://mlflow.mlops:5000",
    )
    async with DeploymentController(cluster), JobController(cluster):
        yield Bed(
            "kubernetes",
            lambda store: KubernetesPlatform(k8s, store=store),
            "team/steps:1",
            {"v1": "models:/digits/1", "v2": "models:/digits/2"},
            outlives=True,
        )


@pytest.fixture
async def platform(bed: Bed) -> AsyncIterator[Platform]:
    """The bed's platform, reporting finished runs to ``bed.finished``."""
    found = bed.make(None)
    _report_to(found, bed.finished)
    yield found
    await found.close()


class JobController(EmulatedController):
    """The Job controller's part on the emulator: a step's Job ends as its command says."""

    plural = "jobs"
    every = 0.02

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self._seen: dict[str, float] = {}

    async def reconcile(self, name: str, job: dict[str, Any]) -> None:
        if (job.get("status") or {}).get("conditions"):
            return
        first = self._seen.setdefault(name, time.monotonic())
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        outcome = command[command.index("--outcome") + 1]
        deadline = job["spec"].get("activeDeadlineSeconds", 1e9)
        if outcome == "ok":
            await self._end(name, "Complete", "")
        elif outcome == "fail":
            await self._end(name, "Failed", "BackoffLimitExceeded")
        elif time.monotonic() - first > deadline:
            await self._end(name, "Failed", "DeadlineExceeded")

    async def _end(self, name: str, kind: str, reason: str) -> None:
        condition = {"type": kind, "status": "True", "reason": reason or "Completed"}
        if reason == "DeadlineExceeded":
            condition["message"] = "Job was active longer than specified deadline"
        elif reason:
            condition["message"] = "pod exited with code 3"
        counts = {"succeeded": 1} if kind == "Complete" else {"failed": 1}
        with contextlib.suppress(AssertionError):  # Deleted in between: nothing to end.
            await self.cluster.patch_status("jobs", name, {**counts, "conditions": [condition]})


def _report_to(platform: Platform, finished: list[RunStatus]) -> None:
    platform.on_run_finished = finished.append  # type: ignore[attr-defined]


def _batch(tmp_path: Path, image: str | None, **outcomes: str) -> Workflow:
    """prepare → (fit, check) → report; each step's outcome as given (default ok)."""

    def node(name: str, needs: str | None = None, **extra: Any) -> dict[str, Any]:
        parameters: dict[str, Any] = {"outcome": outcomes.get(name, "ok")}
        if needs:
            parameters["needs"] = needs
        found = {"name": name, "entry_point": "step.py", "parameters": parameters, **extra}
        if image:
            found["image"] = image
        return found

    workflow = load_workflow(
        {
            "name": "retrain",
            "nodes": [
                node("prepare"),
                node("fit", "prepare", timeout=1.5),
                node("check", "prepare"),
                node("report", "fit"),
            ],
            "edges": [["prepare", "fit"], ["prepare", "check"], ["fit", "report"]],
        }
    )
    return workflow.model_copy(update={"base_dir": tmp_path})


def _online(bed: Bed, model: str = "v1", replicas: int = 1) -> Workflow:
    uri = bed.models.get(model, model)
    return load_workflow(
        {
            "name": "serve",
            "kind": "online",
            "nodes": [{"name": "model", "model_uri": uri, "replicas": replicas}],
        }
    )


async def test_a_dag_runs_in_dependency_order_and_reports_its_end_once(
    bed: Bed, platform: Platform, tmp_path: Path
) -> None:
    run_id = await platform.run(_batch(tmp_path, bed.image), run_id="dag-1")

    status = await platform.wait(run_id, timeout=40)

    assert status.state == "succeeded", status.message
    assert {n: r.state for n, r in status.nodes.items()} == dict.fromkeys(
        ["prepare", "fit", "check", "report"], "succeeded"
    )
    assert status.nodes["prepare"].finished_at <= status.nodes["fit"].started_at  # type: ignore[operator]
    await eventually(lambda: len(bed.finished) == 1)
    assert [s.run_id for s in bed.finished] == ["dag-1"]
    assert await platform.run(_batch(tmp_path, bed.image), run_id="dag-1") == "dag-1"
    assert [r.run_id for r in (await platform.status("retrain")).runs] == ["dag-1"]


async def test_a_failed_step_skips_its_dependants(
    bed: Bed, platform: Platform, tmp_path: Path
) -> None:
    run_id = await platform.run(_batch(tmp_path, bed.image, fit="fail"), run_id="broken")

    status = await platform.wait(run_id, timeout=40)

    assert (status.state, status.failed_node) == ("failed", "fit")
    assert status.nodes["report"].state == "skipped"
    assert status.nodes["report"].reason == "not started: node 'fit' failed"
    assert status.nodes["prepare"].state == "succeeded"
    await eventually(lambda: [s.state for s in bed.finished] == ["failed"])


async def test_a_step_past_its_timeout_fails_the_run(
    bed: Bed, platform: Platform, tmp_path: Path
) -> None:
    run_id = await platform.run(_batch(tmp_path, bed.image, fit="sleep"), run_id="slow")

    status = await platform.wait(run_id, timeout=40)

    assert (status.state, status.failed_node) == ("failed", "fit")
    assert re.search(r"timed out|deadline", status.nodes["fit"].reason or ""), status.message


async def test_delete_cancels_a_run_and_reports_it_cancelled(
    bed: Bed, platform: Platform, tmp_path: Path
) -> None:
    run_id = await platform.run(_batch(tmp_path, bed.image, fit="sleep"), run_id="doomed")
    await _until_running(platform, run_id, "fit")

    result = await platform.delete("retrain")

    assert result.outcome == "deleted"
    status = await platform.run_status(run_id)
    assert status.state == "cancelled"
    assert status.nodes["report"].state == "skipped"
    assert [(s.run_id, s.state) for s in bed.finished] == [("doomed", "cancelled")]
    assert (await platform.delete("retrain")).outcome == "absent"


async def test_a_restarted_platform_finds_its_runs_and_reports_their_end(
    bed: Bed, tmp_path: Path
) -> None:
    store = MemoryRunStore()
    first = bed.make(store)
    await first.run(_batch(tmp_path, bed.image, fit="sleep"), run_id="long")
    await _until_running(first, "long", "fit")
    await first.close()  # the planner stops mid-run

    second = bed.make(store)
    ended: list[RunStatus] = []
    _report_to(second, ended)
    try:
        assert await second.resume() == ["long"]
        status = await second.wait("long", timeout=40)
    finally:
        await second.close()

    if bed.outlives:  # the run went on on the cluster; its step hit its deadline
        assert (status.state, status.failed_node) == ("failed", "fit")
    else:  # its steps were the first platform's children
        assert status.state == "cancelled"
        assert "closed while it ran" in status.message
    assert [s.run_id for s in ended] == ["long"]
    assert (await store.get("long")).reported  # type: ignore[union-attr]
    third = bed.make(store)
    try:
        assert await third.resume() == []  # reported once, never again
        assert (await third.run_status("long")).state == status.state
    finally:
        await third.close()


# On the local platform this starts five model-server processes (MLflow and
# scikit-learn imported in each): about a minute on a slow 2-core machine.
@pytest.mark.timeout(300)
async def test_deploy_scale_redeploy_and_delete_a_service(bed: Bed, platform: Platform) -> None:
    created = await platform.deploy(_online(bed))
    assert created.outcome == "created"
    assert (await platform.deploy(_online(bed))).outcome == "unchanged"

    scaled = await platform.scale("serve", "model", 2)
    assert (scaled.outcome, scaled.details["replicas"]) == ("updated", 2)
    assert (await platform.scale("serve", "model", 2)).outcome == "unchanged"

    rolled = await platform.redeploy("serve", "model", bed.models["v2"])
    assert rolled.outcome == "updated", rolled.message
    assert rolled.details["previous"] == bed.models["v1"]
    service = (await platform.status("serve")).services[0]
    assert (service.model_uri, service.desired_replicas) == (bed.models["v2"], 2)
    await _until_ready(platform, 2)

    broken = await platform.redeploy("serve", "model", "models:/broken/1")
    assert broken.outcome == "failed"
    assert broken.details["rolled_back"] is True
    assert f"rolled back to {bed.models['v2']}" in broken.message
    assert (await platform.status("serve")).services[0].model_uri == bed.models["v2"]

    deleted = await platform.delete("serve")
    assert deleted.outcome == "deleted"
    assert not (await platform.status("serve")).deployed
    assert (await platform.delete("serve")).outcome == "absent"


async def _until_ready(platform: Platform, count: int) -> None:
    deadline = time.monotonic() + 90
    while (await platform.status("serve")).services[0].ready_replicas != count:
        assert time.monotonic() < deadline, f"never {count} ready replica(s)"
        await asyncio.sleep(0.1)


async def _until_running(platform: Platform, run_id: str, node: str) -> None:
    deadline = time.monotonic() + 60
    while (await platform.run_status(run_id)).nodes[node].state != "running":
        assert time.monotonic() < deadline, f"{node} of {run_id} never started"
        await asyncio.sleep(0.05)


def test_both_platforms_keep_the_protocol() -> None:
    assert isinstance(LocalPlatform(), Platform)
    assert isinstance(KubernetesPlatform(), Platform)
    assert f"scanflow-{TEAM}" == NAMESPACE
