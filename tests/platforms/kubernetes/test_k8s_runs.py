"""Batch runs on the emulator: Jobs in dependency order, failures, Argo Workflows."""

from __future__ import annotations

import asyncio

import pytest

from scanflow_agents.platforms import PlatformError, RunStatus
from scanflow_agents.platforms.kubernetes import KubernetesPlatform, KubernetesPlatformSettings
from scanflow_agents.testing import eventually
from scanflow_agents.workflows import Workflow

from .conftest import TEAM, Cluster


async def test_jobs_start_in_dependency_order(
    platform: KubernetesPlatform, cluster: Cluster, batch: Workflow
) -> None:
    finished: list[RunStatus] = []
    platform.on_run_finished = finished.append

    run_id = await platform.run(batch, run_id="nightly", parameters={"fit": {"C": 2}})

    assert run_id == "nightly"
    await cluster.finish_job("nightly-prepare")
    # fit and check only wait for prepare: both start; report waits for both.
    await eventually(lambda: len(cluster.objects("jobs")) == 3)
    assert cluster.created("jobs") == ["nightly-prepare", "nightly-fit", "nightly-check"]
    await cluster.finish_job("nightly-check")
    await cluster.finish_job("nightly-fit")
    await cluster.finish_job("nightly-report")
    status = await platform.wait(run_id, timeout=10)

    assert status.state == "succeeded"
    assert {n: r.state for n, r in status.nodes.items()} == dict.fromkeys(
        ["prepare", "fit", "check", "report"], "succeeded"
    )
    assert cluster.created("jobs")[-1] == "nightly-report"
    assert [s.run_id for s in finished] == ["nightly"]

    job = cluster.get("jobs", "nightly-fit")
    assert job["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "scanflow-agents",
        "scanflow.io/team": TEAM,
        "scanflow.io/workflow": "retrain",
        "scanflow.io/node": "fit",
        "app.kubernetes.io/component": "executor",
        "scanflow.io/run": "nightly",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    # A drained node's eviction is no failure of the step: the Job makes a new pod.
    assert spec["podFailurePolicy"] == {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        ]
    }
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["image"] == "team/steps:1"
    # The step's command, wrapped so the run folder is fetched before and stored after.
    sync, step = container["command"][:8], container["command"][8:]
    assert sync == [
        "python", "-m", "scanflow_agents.platforms.rundirs",
        "--uri", "mlflow-artifacts:/scanflow-runs/nightly",
        "--dir", "/scanflow/run", "--",
    ]  # fmt: skip
    assert step[:2] == ["python", "-c"]
    assert step[3:] == ["digits.training:fit", "--C", "2"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SCANFLOW_RUN_ID"] == "nightly"
    assert env["SCANFLOW_RUN_DIR"] == "/scanflow/run"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert {"name": "run-dir", "mountPath": "/scanflow/run"} in container["volumeMounts"]
    prepare = cluster.get("jobs", "nightly-prepare")["spec"]
    assert prepare["template"]["spec"]["containers"][0]["command"][8:] == [
        "python",
        "-m",
        "digits.prepare",
    ]
    # A step without a timeout of its own still has a deadline.
    assert prepare["activeDeadlineSeconds"] == 6 * 3600


async def test_a_failed_step_stops_its_dependants(
    platform: KubernetesPlatform, cluster: Cluster, batch: Workflow
) -> None:
    run_id = await platform.run(batch, run_id="broken")
    await cluster.finish_job("broken-prepare")
    await cluster.finish_job("broken-fit", ok=False)
    await cluster.finish_job("broken-check")  # already running: it may finish
    status = await platform.wait(run_id, timeout=10)

    assert status.state == "failed"
    assert status.failed_node == "fit"
    assert "node 'fit' of workflow 'retrain' failed: pod exited with code 3" in status.message
    assert "kubectl logs -n scanflow-vision job/broken-fit" in status.message
    assert {n: r.state for n, r in status.nodes.items()} == {
        "prepare": "succeeded",
        "fit": "failed",
        "check": "succeeded",
        "report": "skipped",
    }
    assert status.nodes["report"].reason == "not started: node 'fit' failed"
    assert "broken-report" not in cluster.objects("jobs")


async def test_run_returns_at_once_and_a_repeated_id_starts_nothing(
    platform: KubernetesPlatform, cluster: Cluster, batch: Workflow
) -> None:
    run_id = await platform.run(batch)

    assert run_id.startswith("retrain-")
    assert (await platform.run_status(run_id)).state in ("pending", "running")
    assert await platform.run(batch, run_id=run_id) == run_id
    await eventually(lambda: len(cluster.objects("jobs")) == 1)
    await asyncio.sleep(0.1)
    assert len(cluster.requests("post", "jobs")) == 1


async def test_a_new_platform_adopts_the_jobs_of_a_repeated_run_id(
    settings: KubernetesPlatformSettings, cluster: Cluster, batch: Workflow
) -> None:
    async with KubernetesPlatform(settings) as first:
        await first.run(batch, run_id="again")
        await cluster.finish_job("again-prepare")
        await eventually(lambda: "again-check" in cluster.objects("jobs"))
    async with KubernetesPlatform(settings) as second:
        await second.run(batch, run_id="again")
        for step in ("fit", "check", "report"):
            await cluster.finish_job(f"again-{step}")
        status = await second.wait("again", timeout=10)

    assert status.state == "succeeded"
    assert cluster.created("jobs").count("again-prepare") == 2  # the second POST got 409
    assert len(cluster.objects("jobs")) == 4


async def test_a_foreign_job_with_a_steps_name_fails_the_step(
    platform: KubernetesPlatform, cluster: Cluster, batch: Workflow
) -> None:
    await cluster.add("jobs", {"metadata": {"name": "clash-prepare", "labels": {"app": "x"}}})

    status = await platform.wait(await platform.run(batch, run_id="clash"), timeout=10)

    assert status.failed_node == "prepare"
    assert "Job scanflow-vision/clash-prepare of the same name exists" in status.message
    assert cluster.get("jobs", "clash-prepare")["metadata"]["labels"] == {"app": "x"}


async def test_bad_runs_are_refused(
    platform: KubernetesPlatform, batch: Workflow, online: Workflow
) -> None:
    with pytest.raises(PlatformError, match=r"unknown executor\(s\) \['nope'\]") as e:
        await platform.run(batch, parameters={"nope": {"x": 1}})
    assert e.value.code == "invalid"
    with pytest.raises(PlatformError, match=r"workflow 'serve' has no executor nodes"):
        await platform.run(online)
    with pytest.raises(PlatformError, match=r"no run 'missing'") as missing:
        await platform.run_status("missing")
    assert missing.value.code == "not_found"


async def test_delete_cancels_a_run_and_removes_its_jobs(
    platform: KubernetesPlatform, cluster: Cluster, batch: Workflow
) -> None:
    run_id = await platform.run(batch, run_id="doomed")
    await eventually(lambda: "doomed-prepare" in cluster.objects("jobs"))

    result = await platform.delete("retrain")

    assert result.outcome == "deleted"
    assert result.details == {"jobs": 1}
    assert cluster.objects("jobs") == {}
    status = await platform.run_status(run_id)
    assert status.state == "cancelled"
    assert status.nodes["report"].state == "skipped"
    assert (await platform.delete("retrain")).outcome == "absent"


async def test_argo_runs_one_workflow_with_a_dag(
    platform: KubernetesPlatform, cluster: Cluster, batch: Workflow
) -> None:
    cluster.serve("workflows")  # the cluster now serves argoproj.io/v1alpha1

    run_id = await platform.run(batch, run_id="dag", parameters={"fit": {"C": 2}})
    await eventually(lambda: "dag" in cluster.objects("workflows"))

    assert cluster.objects("jobs") == {}
    argo = cluster.get("workflows", "dag")
    assert argo["metadata"]["labels"]["scanflow.io/run"] == "dag"
    spec = argo["spec"]
    assert spec["entrypoint"] == "main"
    main, *steps = spec["templates"]
    assert main["dag"]["tasks"] == [
        {"name": "prepare", "template": "prepare"},
        {"name": "fit", "template": "fit", "dependencies": ["prepare"]},
        {"name": "check", "template": "check", "dependencies": ["prepare"]},
        {"name": "report", "template": "report", "dependencies": ["check", "fit"]},
    ]
    fit = next(t for t in steps if t["name"] == "fit")
    assert fit["container"]["command"][11:] == ["digits.training:fit", "--C", "2"]
    assert fit["activeDeadlineSeconds"] == 600
    assert spec["podGC"] == {"strategy": "OnPodSuccess"}
    assert spec["ttlStrategy"] == {"secondsAfterCompletion": 3600}
    assert spec["activeDeadlineSeconds"] == 24 * 3600
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True

    # What the Argo controller would write.
    await cluster.patch_status(
        "workflows",
        "dag",
        {
            "phase": "Failed",
            "nodes": {
                "dag-1": {"displayName": "prepare", "phase": "Succeeded"},
                "dag-2": {"displayName": "fit", "phase": "Failed", "message": "exit code 1"},
                "dag-3": {"displayName": "check", "phase": "Succeeded"},
            },
        },
    )
    status = await platform.wait(run_id, timeout=10)

    assert status.state == "failed"
    assert status.failed_node == "fit"
    assert {n: r.state for n, r in status.nodes.items()} == {
        "prepare": "succeeded",
        "fit": "failed",
        "check": "succeeded",
        "report": "skipped",
    }
    assert (await platform.delete("retrain")).details == {"workflows": 1}


async def test_argo_success(
    settings: KubernetesPlatformSettings, cluster: Cluster, batch: Workflow
) -> None:
    cluster.serve("workflows")
    async with KubernetesPlatform(settings.model_copy(update={"argo": "always"})) as platform:
        run_id = await platform.run(batch, run_id="fine")
        await eventually(lambda: "fine" in cluster.objects("workflows"))
        nodes = {
            f"n{i}": {"displayName": name, "phase": "Succeeded"}
            for i, name in enumerate(["prepare", "fit", "check", "report"])
        }
        await cluster.patch_status("workflows", "fine", {"phase": "Succeeded", "nodes": nodes})
        status = await platform.wait(run_id, timeout=10)

    assert status.state == "succeeded"
    assert {r.state for r in status.nodes.values()} == {"succeeded"}
