"""Image builds on the emulator: contexts in ConfigMaps, BuildKit Jobs in their namespace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from scanflow_agents.platforms import PlatformError
from scanflow_agents.platforms.kubernetes import KubernetesPlatform, KubernetesPlatformSettings
from scanflow_agents.testing import eventually
from scanflow_agents.workflows import Workflow, load_workflow

from .conftest import BUILDS, Cluster

WORKFLOW = """
name: retrain
nodes:
  - name: fit
    entry_point: steps/fit.py
    requirements: [scikit-learn>=1.4, pandas]
  - name: publish
    entry_point: digits.publish
    image: team/publish:3
  - name: tidy
    entry_point: digits.tidy
edges: [[fit, publish]]
"""


@pytest.fixture
def scripted(tmp_path: Path) -> Workflow:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "fit.py").write_text("from helpers import load\nprint(load())\n")
    (tmp_path / "steps" / "helpers.py").write_text("def load():\n    return 42\n")
    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    return load_workflow(tmp_path / "workflow.yaml")


def _builds(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {
        name: job
        for name, job in cluster.objects("jobs", BUILDS).items()
        if job["metadata"]["labels"].get("app.kubernetes.io/component") == "build"
    }


async def _finish_builds(cluster: Cluster, count: int, *, ok: bool = True) -> None:
    await eventually(lambda: len(_builds(cluster)) == count, timeout=10)
    for name in _builds(cluster):
        await cluster.finish_job(name, ok=ok, namespace=BUILDS)


async def test_build_runs_rootless_buildkit_with_the_context_in_a_configmap(
    platform: KubernetesPlatform, cluster: Cluster, scripted: Workflow
) -> None:
    building = asyncio.create_task(platform.build(scripted))
    await _finish_builds(cluster, 1)
    [job] = _builds(cluster).values()
    pod = job["spec"]["template"]["spec"]
    # Requests, so that a namespace with a ResourceQuota admits the builder.
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert pod["initContainers"][0]["resources"]["requests"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = cluster.get("configmaps", volumes["context"]["configMap"]["name"], BUILDS)
    result = await building

    assert result.outcome == "created"
    [job] = _builds(cluster).values()
    image = result.images["retrain/fit"]
    assert image.startswith("registry.example.com/ml/retrain-fit:")
    assert result.images["retrain/publish"] == "team/publish:3"
    assert result.images["retrain/tidy"] == KubernetesPlatformSettings().executor_image
    fit = next(e for e in result.environments if e.node == "fit")
    assert (fit.reused, fit.requirements_hash) == (False, image.rsplit(":", 1)[1])
    [builder] = pod["containers"]
    assert builder["image"].startswith("moby/buildkit:")
    assert builder["image"].endswith("-rootless")
    assert builder["command"] == ["buildctl-daemonless.sh"]
    assert f"--output=type=image,name={image},push=true" in builder["args"]
    assert builder["securityContext"]["runAsUser"] == 1000
    assert pod["automountServiceAccountToken"] is False
    assert pod["imagePullSecrets"] == [{"name": "push-credentials"}]
    assert job["spec"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    assert job["metadata"]["labels"]["scanflow.io/node"] == "fit"
    assert volumes["registry"]["secret"]["secretName"] == "push-credentials"
    # The context served its build: its ConfigMap is gone.
    assert cluster.objects("configmaps", BUILDS) == {}
    paths = {
        i["path"]: configmap["data"][i["key"]] for i in volumes["context"]["configMap"]["items"]
    }
    assert sorted(paths) == [
        "Dockerfile",
        "app/steps/fit.py",
        "app/steps/helpers.py",
        "requirements.txt",
    ]
    assert paths["requirements.txt"] == "pandas\nscikit-learn>=1.4\n"
    dockerfile = paths["Dockerfile"].splitlines()
    # From the project image, the requirements as root, then its user again.
    assert dockerfile[0] == f"FROM {KubernetesPlatformSettings().base_image}"
    assert dockerfile[2:5] == [
        "USER 0",
        "COPY requirements.txt /app/requirements.txt",
        "RUN pip install --no-cache-dir -r /app/requirements.txt",
    ]
    assert "COPY app/ /app/" in dockerfile
    assert dockerfile[-1] == "USER 10001"
    assert "scanflow-agents" not in paths["requirements.txt"]
    assert paths["app/steps/helpers.py"] == "def load():\n    return 42\n"


async def test_an_unchanged_context_is_not_built_twice(
    platform: KubernetesPlatform, cluster: Cluster, scripted: Workflow
) -> None:
    building = asyncio.create_task(platform.build(scripted))
    await _finish_builds(cluster, 1)
    first = await building

    again = await platform.build(scripted)

    assert again.outcome == "unchanged"
    assert again.images == first.images
    assert len(cluster.requests("post", "jobs")) == 1
    assert cluster.objects("jobs") == {}  # builds are in their own namespace


async def test_runs_and_deploys_use_the_built_images(
    platform: KubernetesPlatform, cluster: Cluster, scripted: Workflow
) -> None:
    building = asyncio.create_task(platform.build(scripted))
    await _finish_builds(cluster, 1)
    images = (await building).images

    run_id = await platform.run(scripted, run_id="r1")
    await eventually(lambda: "r1-fit" in cluster.objects("jobs"))
    fit = cluster.get("jobs", "r1-fit")["spec"]["template"]["spec"]["containers"][0]
    assert fit["image"] == images["retrain/fit"]
    assert fit["command"][-3:] == ["--", "python", "/app/steps/fit.py"]
    await cluster.finish_job("r1-fit")
    await cluster.finish_job("r1-tidy")
    await cluster.finish_job("r1-publish")
    assert (await platform.wait(run_id, timeout=10)).state == "succeeded"
    publish = cluster.get("jobs", "r1-publish")["spec"]["template"]["spec"]["containers"][0]
    assert publish["image"] == "team/publish:3"

    online = load_workflow(
        {
            "name": "serve",
            "kind": "online",
            "nodes": [{"name": "m", "model_uri": "models:/d/1", "requirements": ["xgboost"]}],
        }
    )
    await platform.deploy(online)
    container = cluster.get("deployments", "serve-m")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.example.com/ml/serve-m:")


async def test_a_failed_build_names_the_node_and_the_job(
    platform: KubernetesPlatform, cluster: Cluster, scripted: Workflow
) -> None:
    building = asyncio.create_task(platform.build(scripted))
    await _finish_builds(cluster, 1, ok=False)

    with pytest.raises(
        PlatformError, match=r"building retrain/fit failed: build Job scanflow-builds/"
    ) as e:
        await building
    assert e.value.code == "failed"
    assert "kubectl logs" in str(e.value)
    assert cluster.objects("configmaps", BUILDS) == {}


async def test_a_build_pod_refused_by_pod_security_fails_the_build_at_once(
    platform: KubernetesPlatform, cluster: Cluster, scripted: Workflow
) -> None:
    # A build namespace without the privileged label: the Job never gets its pod.
    building = asyncio.create_task(platform.build(scripted))
    await eventually(lambda: len(_builds(cluster)) == 1, timeout=10)
    [name] = _builds(cluster)
    message = f'pods "{name}-x" is forbidden: violates PodSecurity "restricted:latest"'
    await cluster.add(
        "events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.1"},
            "involvedObject": {"kind": "Job", "name": name, "namespace": BUILDS},
            "reason": "FailedCreate",
            "message": message,
            "type": "Warning",
        },
        BUILDS,
    )
    with pytest.raises(PlatformError) as caught:
        await asyncio.wait_for(building, 10)
    assert str(caught.value) == (
        f"building retrain/fit in {BUILDS}: Job {name} cannot create its pod: {message}"
    )
    assert caught.value.code == "failed"


async def test_builds_refuse_what_they_cannot_do(
    settings: KubernetesPlatformSettings, cluster: Cluster, scripted: Workflow
) -> None:
    small = settings.model_copy(update={"max_context_bytes": 50})
    async with KubernetesPlatform(small) as platform:
        with pytest.raises(PlatformError, match=r"retrain/fit: the build context is \d+ bytes"):
            await platform.build(scripted)
    unregistered = settings.model_copy(update={"registry": None})
    async with KubernetesPlatform(unregistered) as platform:
        with pytest.raises(PlatformError, match=r"building retrain/fit: no registry") as e:
            await platform.build(scripted)
        assert e.value.code == "invalid"
        with pytest.raises(PlatformError, match=r"node 'fit' of workflow 'retrain' needs an image"):
            await platform.run(scripted)
    assert cluster.objects("jobs") == {}
    assert cluster.objects("configmaps") == {}
