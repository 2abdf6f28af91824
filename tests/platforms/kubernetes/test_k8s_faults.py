"""What kmock does not do by itself: stuck pods, Job conditions, Argo trouble, 403s, broken links.

The emulator runs no controllers and never refuses a request; these tests
seed what kubelets, the Job controller, the Argo controller, RBAC and a
flaky network would produce, and check the platform's answer to each.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scanflow_agents.platforms.kubernetes import KubernetesPlatform, KubernetesPlatformSettings
from scanflow_agents.platforms.kubernetes.jobs import job_state
from scanflow_agents.testing import eventually
from scanflow_agents.workflows import Workflow, load_workflow

from .conftest import NAMESPACE, Cluster, FaultyProxy

STEP_LABELS = {
    "app.kubernetes.io/managed-by": "scanflow-agents",
    "scanflow.io/workflow": "retrain",
    "app.kubernetes.io/component": "executor",
}


def _one_step() -> Workflow:
    return load_workflow(
        {"name": "retrain", "nodes": [{"name": "fit", "entry_point": "x.fit", "image": "t/s:1"}]}
    )


async def _pod(cluster: Cluster, run: str, status: dict[str, Any]) -> None:
    await cluster.add(
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{run}-fit-abcde",
                "labels": {**STEP_LABELS, "scanflow.io/node": "fit", "scanflow.io/run": run},
            },
            "status": {"phase": "Pending", **status},
        },
    )


async def test_a_pod_that_cannot_pull_its_image_fails_the_step_at_once(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    run_id = await platform.run(_one_step(), run_id="pull")
    await eventually(lambda: "pull-fit" in cluster.objects("jobs"))
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "t/s:1"'}
    await _pod(
        cluster, "pull", {"containerStatuses": [{"name": "step", "state": {"waiting": waiting}}]}
    )

    status = await platform.wait(run_id, timeout=10)

    assert (status.state, status.failed_node) == ("failed", "fit")
    assert status.nodes["fit"].reason == (
        'pod pull-fit-abcde cannot start: ImagePullBackOff: Back-off pulling image "t/s:1"'
    )
    assert "pull-fit" not in cluster.objects("jobs")  # it would keep pulling until its deadline


async def test_a_missing_secret_fails_the_step_at_once(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    run_id = await platform.run(_one_step(), run_id="secret")
    await eventually(lambda: "secret-fit" in cluster.objects("jobs"))
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "creds" not found'}
    await _pod(
        cluster, "secret", {"containerStatuses": [{"name": "s", "state": {"waiting": waiting}}]}
    )

    status = await platform.wait(run_id, timeout=10)

    assert 'CreateContainerConfigError: secret "creds" not found' in status.message


async def test_an_unschedulable_pod_fails_the_step_after_the_pending_timeout(
    settings: KubernetesPlatformSettings, cluster: Cluster
) -> None:
    async with KubernetesPlatform(settings.model_copy(update={"pending_timeout": 0.5})) as k8s:
        run_id = await k8s.run(_one_step(), run_id="full")
        await eventually(lambda: "full-fit" in cluster.objects("jobs"))
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.",
        }
        await _pod(cluster, "full", {"conditions": [condition]})
        await asyncio.sleep(0.2)
        assert (await k8s.run_status(run_id)).state == "running"  # it gets time

        status = await k8s.wait(run_id, timeout=10)

    assert "was not scheduled in" in status.message
    assert "3 Insufficient memory" in status.message


async def test_a_job_refused_its_pod_by_admission_fails_with_the_event(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    run_id = await platform.run(_one_step(), run_id="psa")
    await eventually(lambda: "psa-fit" in cluster.objects("jobs"))
    message = 'pods "psa-fit-x" is forbidden: violates PodSecurity "restricted:latest"'
    await cluster.add(
        "events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "psa-fit.1"},
            "involvedObject": {"kind": "Job", "name": "psa-fit", "namespace": NAMESPACE},
            "reason": "FailedCreate",
            "message": message,
            "type": "Warning",
        },
    )

    status = await platform.wait(run_id, timeout=10)

    assert status.nodes["fit"].reason == f"Job psa-fit cannot create its pod: {message}"


@pytest.mark.parametrize(
    ("condition", "state", "why"),
    [
        ({"type": "Complete"}, "succeeded", None),
        ({"type": "SuccessCriteriaMet"}, "succeeded", None),
        (
            {"type": "Failed", "reason": "BackoffLimitExceeded", "message": "exit 3"},
            "failed",
            "exit 3",
        ),
        (
            {"type": "FailureTarget", "reason": "PodFailurePolicy", "message": "rule 0"},
            "failed",
            "rule 0",
        ),
        (
            {"type": "Failed", "reason": "DeadlineExceeded", "message": "active too long"},
            "failed",
            "deadline exceeded: active too long",
        ),
        ({"type": "Failed", "status": "False"}, "running", None),
    ],
)
def test_job_conditions(condition: dict[str, str], state: str, why: str | None) -> None:
    job = {"status": {"conditions": [{"status": "True", **condition}]}}

    assert job_state(job) == (state, why)


async def test_a_run_through_a_condition_the_controller_sets_early(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    run_id = await platform.run(_one_step(), run_id="early")
    await eventually(lambda: "early-fit" in cluster.objects("jobs"))
    target = {"type": "FailureTarget", "status": "True", "message": "pod failure policy"}
    await cluster.patch_status("jobs", "early-fit", {"conditions": [target]})

    status = await platform.wait(run_id, timeout=10)

    assert status.nodes["fit"].reason == "pod failure policy"


async def test_argo_error_phase_fails_the_run(
    platform: KubernetesPlatform, cluster: Cluster, batch: Workflow
) -> None:
    cluster.serve("workflows")
    run_id = await platform.run(batch, run_id="err")
    await eventually(lambda: "err" in cluster.objects("workflows"))
    await cluster.patch_status(
        "workflows", "err", {"phase": "Error", "message": "invalid spec: templates.fit"}
    )

    status = await platform.wait(run_id, timeout=10)

    assert status.state == "failed"
    assert status.message == "Argo Workflow err: invalid spec: templates.fit"
    assert {r.state for r in status.nodes.values()} == {"skipped"}


async def test_an_argo_workflow_nobody_picks_up_fails_after_a_deadline(
    settings: KubernetesPlatformSettings, cluster: Cluster, batch: Workflow
) -> None:
    cluster.serve("workflows")  # the CRD is installed, the controller is not running
    quick = settings.model_copy(update={"argo_pickup_timeout": 0.3})
    async with KubernetesPlatform(quick) as k8s:
        status = await k8s.wait(await k8s.run(batch, run_id="orphan"), timeout=10)

    assert status.state == "failed"
    assert "no controller picked it up in 0 s" in status.message
    assert "orphan" not in cluster.objects("workflows")


async def test_an_argo_step_that_cannot_pull_stops_its_workflow(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    cluster.serve("workflows")
    run_id = await platform.run(_one_step(), run_id="argopull")
    await eventually(lambda: "argopull" in cluster.objects("workflows"))
    node = {"displayName": "fit", "phase": "Running"}
    await cluster.patch_status(
        "workflows", "argopull", {"phase": "Running", "nodes": {"argopull-1": node}}
    )
    waiting = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
    await _pod(
        cluster,
        "argopull",
        {"containerStatuses": [{"name": "main", "state": {"waiting": waiting}}]},
    )

    status = await platform.wait(run_id, timeout=10)

    assert (status.state, status.failed_node) == ("failed", "fit")
    assert "ImagePullBackOff" in status.message
    # Stopped (a patch), not left to wait for its deadline with a pod that never starts.
    assert cluster.get("workflows", "argopull")["spec"]["shutdown"] == "Terminate"


async def test_delete_never_asks_for_argo_when_it_is_off(
    settings: KubernetesPlatformSettings, cluster: Cluster, proxy: FaultyProxy, online: Workflow
) -> None:
    cluster.serve("workflows")
    proxy.forbid.append(("GET", "/apis/argoproj.io/"))
    never = settings.model_copy(update={"host": proxy.url, "argo": "never"})
    async with KubernetesPlatform(never) as k8s:
        await k8s.deploy(online)
        result = await k8s.delete("serve")

    assert result.outcome == "deleted"
    assert cluster.requests("get", "workflows") == []


async def test_a_403_on_argo_does_not_abort_a_delete_but_one_on_deployments_does(
    settings: KubernetesPlatformSettings, cluster: Cluster, proxy: FaultyProxy, online: Workflow
) -> None:
    cluster.serve("workflows")
    proxy.forbid.append(("GET", "/apis/argoproj.io/"))
    auto = settings.model_copy(update={"host": proxy.url})
    async with KubernetesPlatform(auto) as k8s:
        await k8s.deploy(online)
        assert (await k8s.delete("serve")).details == {"services": 2, "deployments": 2}
        await k8s.deploy(online)
        proxy.forbid.append(("DELETE", "/deployments/"))
        with pytest.raises(Exception, match=r"403 .*forbidden.*lacks this permission") as e:
            await k8s.delete("serve")
    assert getattr(e.value, "code", None) == "failed"


async def test_broken_connections_are_retried(
    settings: KubernetesPlatformSettings, cluster: Cluster, proxy: FaultyProxy, online: Workflow
) -> None:
    flaky = settings.model_copy(update={"host": proxy.url})
    async with KubernetesPlatform(flaky) as k8s:
        await k8s.status("serve")  # connected
        proxy.breaks = 2
        result = await k8s.deploy(online)
        assert result.outcome == "created"
        assert proxy.broken == 2
        proxy.breaks = 10  # more than the retries: a connection error, named as such
        with pytest.raises(Exception, match=r"Kubernetes API unreachable: ServerDisconnected") as e:
            await k8s.status("serve")
    assert getattr(e.value, "status", None) == 0
