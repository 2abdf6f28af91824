"""Online workflows on the emulator: Deployments, Services, scale, redeploy, status, delete."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from scanflow_agents.runtime.loading import load_agent_classes

from scanflow_agents.platforms import PlatformError
from scanflow_agents.platforms.kubernetes import KubernetesPlatform, KubernetesPlatformSettings
from scanflow_agents.testing import eventually
from scanflow_agents.workflows import Workflow, load_application

from .conftest import BUS_NAMESPACE, NAMESPACE, TEAM, Cluster, rebuild, with_node

LABELS = {
    "app.kubernetes.io/managed-by": "scanflow-agents",
    "scanflow.io/team": TEAM,
    "scanflow.io/workflow": "serve",
    "scanflow.io/node": "model",
    "app.kubernetes.io/component": "service",
}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


async def test_deploy_creates_a_deployment_and_service_per_node(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    result = await platform.deploy(online)

    assert result.outcome == "created"
    assert [(s.node, s.outcome) for s in result.services] == [
        ("model", "created"),
        ("shadow", "created"),
    ]
    assert sorted(cluster.objects("deployments")) == ["serve-model", "serve-shadow"]
    assert sorted(cluster.objects("services")) == ["serve-model", "serve-shadow"]
    deployment = cluster.get("deployments", "serve-model")
    assert deployment["metadata"]["labels"] == LABELS
    assert deployment["spec"]["replicas"] == 2
    selector = {k: v for k, v in LABELS.items() if k != "scanflow.io/team"}
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    assert deployment["spec"]["template"]["metadata"]["labels"] == LABELS
    container = _container(deployment)
    assert container["command"] == ["python", "-m", "scanflow_agents.serving"]
    args = container["args"]
    assert args[args.index("--model-uri") + 1] == "models:/digits/1"
    assert args[args.index("--port") + 1] == "8080"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--replica") + 1] == "$(POD_NAME)"
    assert args[args.index("--tracking-uri") + 1] == "http://mlflow.mlops:5000"
    # Reports go where the agents listen, whatever the team's Kubernetes namespace.
    assert args[args.index("--namespace") + 1] == BUS_NAMESPACE
    env = _env(container)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert env["SCANFLOW_NATS__URL"] == "nats://nats.mlops:4222"
    assert env["SCANFLOW_NAMESPACE"] == BUS_NAMESPACE
    assert env["LOG_LEVEL"] == "debug"
    assert container["envFrom"] == [{"secretRef": {"name": "scanflow-credentials"}}]
    # No CPU limit (CFS throttling); memory limited to what is requested.
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert container[probe]["timeoutSeconds"] == 5
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    assert deployment["spec"]["progressDeadlineSeconds"] == 600
    assert container["image"] == KubernetesPlatformSettings().serving_image
    svc = cluster.get("services", "serve-model")
    assert svc["metadata"]["labels"] == LABELS
    assert svc["spec"]["selector"] == selector
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert cluster.get("services", "serve-shadow")["spec"]["ports"][0]["port"] == 9000


async def test_deploy_twice_changes_nothing(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    await platform.deploy(online)
    patches = len(cluster.requests("patch", "deployments"))

    again = await platform.deploy(online)

    assert again.outcome == "unchanged"
    assert {s.outcome for s in again.services} == {"unchanged"}
    assert len(cluster.requests("patch", "deployments")) == patches == 0
    assert len(cluster.requests("post", "deployments")) == 2


async def test_changed_definition_is_patched(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    await platform.deploy(online)
    changed = with_node(online, "model", model_uri="models:/digits/3", replicas=3, env={})

    result = await platform.deploy(changed)

    assert result.outcome == "updated"
    by_node = {s.node: s for s in result.services}
    assert by_node["model"].outcome == "updated"
    assert by_node["model"].details == {"template": True, "replicas": [2, 3]}
    assert by_node["shadow"].outcome == "unchanged"
    deployment = cluster.get("deployments", "serve-model")
    assert deployment["spec"]["replicas"] == 3
    container = _container(deployment)
    assert container["args"][container["args"].index("--model-uri") + 1] == "models:/digits/3"
    assert "LOG_LEVEL" not in _env(container)  # replaced, not merged: removals stick
    assert deployment["metadata"]["annotations"]["scanflow.io/model-uri"] == "models:/digits/3"
    assert (await platform.deploy(changed)).outcome == "unchanged"


async def test_nodes_removed_from_the_workflow_are_deleted(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    await platform.deploy(online)
    smaller = rebuild(online, nodes=[online.node("model").model_dump()])

    result = await platform.deploy(smaller)

    assert [(s.node, s.outcome) for s in result.services] == [
        ("model", "unchanged"),
        ("shadow", "deleted"),
    ]
    assert list(cluster.objects("deployments")) == ["serve-model"]
    assert list(cluster.objects("services")) == ["serve-model"]


async def test_scale_patches_the_scale_subresource(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    await platform.deploy(online)

    result = await platform.scale("serve", "model", 5)

    assert (result.outcome, result.details) == ("updated", {"before": 2, "replicas": 5})
    assert cluster.get("deployments", "serve-model")["spec"]["replicas"] == 5
    [patch] = cluster.requests("patch", "deployments")
    assert patch.subresource == "scale"
    assert patch.data == {"spec": {"replicas": 5}}

    same = await platform.scale("serve", "model", 5)
    assert same.outcome == "unchanged"
    assert same.message == "already 5 replica(s)"
    assert len(cluster.requests("patch", "deployments")) == 1

    assert (await platform.scale("serve", "model", 0)).outcome == "updated"
    assert cluster.get("deployments", "serve-model")["spec"]["replicas"] == 0


async def test_scale_rejects_bad_input(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    await platform.deploy(online)

    with pytest.raises(PlatformError, match=r"serve/model: field 'replicas' must be 0") as bad:
        await platform.scale("serve", "model", -1)
    assert bad.value.code == "invalid"
    with pytest.raises(PlatformError, match=r"no service 'nope' of workflow 'serve'") as unknown:
        await platform.scale("serve", "nope", 1)
    assert unknown.value.code == "not_found"
    with pytest.raises(PlatformError, match=r"no service 'model' of workflow 'other'"):
        await platform.redeploy("other", "model", "models:/x/1")
    assert cluster.requests("patch", "deployments") == []


async def test_redeploy_replaces_the_pod_template(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow, controller: object
) -> None:
    await platform.deploy(online)
    await platform.scale("serve", "model", 4)

    result = await platform.redeploy("serve", "model", "models:/digits@production")

    assert result.outcome == "updated"
    assert result.details["previous"] == "models:/digits/1"
    deployment = cluster.get("deployments", "serve-model")
    template = deployment["spec"]["template"]
    container = _container(deployment)
    assert container["args"][container["args"].index("--model-uri") + 1] == (
        "models:/digits@production"
    )
    assert _env(container)["SCANFLOW_MODEL_URI"] == "models:/digits@production"
    assert (
        template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        == (result.details["restarted_at"])
    )
    assert deployment["spec"]["replicas"] == 4  # a rollout keeps the scale
    # The platform's own patch (JSON patch); the controller's are merge patches.
    [patch] = [p for p in cluster.requests("patch", "deployments") if isinstance(p.data, list)]
    assert patch.data[0] == {
        "op": "test",
        "path": "/metadata/labels/app.kubernetes.io~1managed-by",
        "value": "scanflow-agents",
    }

    same = await platform.redeploy("serve", "model", "models:/digits@production")
    assert same.outcome == "unchanged"
    forced = await platform.redeploy("serve", "model", "models:/digits@production", force=True)
    assert forced.outcome == "updated"

    # Deploying the workflow as redeployed changes nothing; as declared, it rolls back.
    redeployed = with_node(online, "model", model_uri="models:/digits@production", replicas=4)
    assert (await platform.deploy(redeployed)).outcome == "unchanged"
    rolled_back = await platform.deploy(online)
    assert rolled_back.services[0].details == {"template": True, "replicas": [4, 2]}


async def test_a_redeploy_whose_pods_never_get_ready_is_rolled_back(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow, controller: object
) -> None:
    await platform.deploy(online)
    await eventually(lambda: "status" in cluster.get("deployments", "serve-model"))
    before = cluster.get("deployments", "serve-model")["spec"]["template"]

    result = await platform.redeploy("serve", "model", "models:/broken/1")

    assert result.outcome == "failed"
    assert result.details["rolled_back"] is True
    assert "timed out progressing" in result.details["reason"]
    assert "rolled back to models:/digits/1" in result.message
    after = cluster.get("deployments", "serve-model")
    assert after["spec"]["template"] == before
    assert after["metadata"]["annotations"]["scanflow.io/model-uri"] == "models:/digits/1"


async def test_status_reports_what_serves_during_a_stuck_rollout(
    settings: KubernetesPlatformSettings, cluster: Cluster, online: Workflow
) -> None:
    # No controller: the rollout to the new model never completes, and the
    # Deployment's status still describes the previous generation.
    async with KubernetesPlatform(settings.model_copy(update={"rollout_deadline": 0.2})) as k8s:
        await k8s.deploy(online)
        await cluster.patch_object("deployments", "serve-model", {"metadata": {"generation": 2}})
        await cluster.patch_status(
            "deployments",
            "serve-model",
            {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2},
        )
        await cluster.add_pod("serve-model-old", LABELS, ready=True, model_uri="models:/digits/1")
        await cluster.add_pod("serve-model-new", LABELS, ready=False, model_uri="models:/bad/1")
        await cluster.patch_object(
            "deployments",
            "serve-model",
            {"metadata": {"annotations": {"scanflow.io/model-uri": "models:/bad/1"}}},
        )

        status = await k8s.status("serve")

    model = next(s for s in status.services if s.node == "model")
    assert model.model_uri == "models:/digits/1"  # what the ready pod serves
    assert model.desired_model_uri == "models:/bad/1"
    assert model.rollout == "progressing"
    assert model.ready_replicas == 1  # from the pods: the status is a generation behind


async def test_foreign_objects_are_left_alone(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "serve-model", "labels": {"app": "theirs"}},
        "spec": {"replicas": 7},
    }
    await cluster.add("deployments", foreign)
    await cluster.add(
        "deployments",
        {"metadata": {"name": "bystander", "labels": {"scanflow.io/workflow": "serve"}}},
    )

    with pytest.raises(PlatformError, match=r"Deployment scanflow-vision/serve-model exists") as e:
        await platform.deploy(online)
    assert "left alone" in str(e.value)
    with pytest.raises(PlatformError, match=r"Deployment scanflow-vision/serve-model is not"):
        await platform.scale("serve", "model", 1)
    with pytest.raises(PlatformError, match=r"is not the service 'model'"):
        await platform.redeploy("serve", "model", "models:/digits/9")

    deleted = await platform.delete("serve")

    assert deleted.outcome == "absent"
    assert cluster.get("deployments", "serve-model")["spec"] == {"replicas": 7}
    assert "bystander" in cluster.objects("deployments")
    assert cluster.requests("patch", "deployments") == []
    assert cluster.requests("delete", "deployments") == []


async def test_status_reads_deployments_and_pods(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    await platform.deploy(online)
    await cluster.add_pod("serve-model-a", LABELS, ready=True, model_uri="models:/digits/1")
    await cluster.add_pod("serve-model-b", LABELS, ready=False, model_uri="models:/digits/1")
    await cluster.add_pod("unrelated", {"app": "x"}, ready=True)

    status = await platform.status("serve")

    assert status.deployed
    model = next(s for s in status.services if s.node == "model")
    assert model.url == f"http://serve-model.{NAMESPACE}.svc"
    assert model.model_uri == "models:/digits/1"
    assert model.rollout == "progressing"  # no controller has reported on it
    assert (model.desired_replicas, model.ready_replicas) == (2, 1)
    assert [(r.replica, r.ready, r.alive) for r in model.replicas] == [
        ("serve-model-a", True, True),
        ("serve-model-b", False, True),
    ]
    shadow = next(s for s in status.services if s.node == "shadow")
    assert shadow.url == f"http://serve-shadow.{NAMESPACE}.svc:9000"
    assert not (await platform.status("nothing")).deployed


async def test_delete_removes_only_what_it_created(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    await platform.deploy(online)
    await cluster.add("services", {"metadata": {"name": "theirs", "labels": {"app": "x"}}})

    first = await platform.delete("serve")

    assert first.outcome == "deleted"
    assert first.details == {"services": 2, "deployments": 2}
    assert cluster.objects("deployments") == {}
    assert list(cluster.objects("services")) == ["theirs"]
    second = await platform.delete("serve")
    assert second.outcome == "absent"
    assert not (await platform.status("serve")).deployed


async def test_bad_workflows_are_refused(platform: KubernetesPlatform, batch: Workflow) -> None:
    with pytest.raises(PlatformError, match=r"'retrain' is a batch workflow; run it") as e:
        await platform.deploy(batch)
    assert e.value.code == "invalid"


async def test_teams_get_namespaces_and_keep_them(
    platform: KubernetesPlatform, cluster: Cluster, online: Workflow
) -> None:
    cluster.emulator.namespaces.add("scanflow-audio")  # made by the install, as the chart does
    await platform.deploy(online, team="audio")

    assert list(cluster.objects("deployments", "scanflow-audio")) == [
        "serve-model",
        "serve-shadow",
    ]
    assert cluster.objects("deployments") == {}
    # Later calls on the workflow find its team without being told.
    assert (await platform.scale("serve", "model", 1)).outcome == "updated"
    assert (await platform.delete("serve")).outcome == "deleted"


async def test_namespace_creation_is_best_effort(
    settings: KubernetesPlatformSettings,
    cluster: Cluster,
    online: Workflow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The emulator serves no cluster-scoped core resources: creating the
    # namespace fails, is logged, and the deploy goes on. It is the one
    # cluster-wide request (not in permissions.RULES: the chart never grants it).
    cluster.cluster_wide |= {("", "namespaces", "get"), ("", "namespaces", "create")}
    caplog.set_level(logging.WARNING)
    async with KubernetesPlatform(settings.model_copy(update={"create_namespaces": True})) as p:
        result = await p.deploy(online)

    assert result.outcome == "created"
    assert "namespace scanflow-vision" in caplog.text


async def test_application_deploys_its_agents(
    platform: KubernetesPlatform, cluster: Cluster
) -> None:
    application = load_application(
        {
            "name": "digits",
            "team": TEAM,
            "workflows": [
                {"name": "serve", "kind": "online", "nodes": [{"name": "m", "model_uri": "m:/1"}]},
                {"name": "train", "nodes": [{"name": "fit", "entry_point": "x.fit"}]},
            ],
            "agents": [
                {"name": "tracker", "agent": "tracker"},
                {"name": "drift", "agent": "team.agents:DriftWatch", "config": {"threshold": 0.2}},
            ],
        }
    )

    result = await platform.deploy_application(application)

    assert result.outcome == "created"
    assert [w.workflow for w in result.workflows] == ["serve"]  # batch ones are run, not deployed
    assert [(a.node, a.outcome) for a in result.agents] == [
        ("tracker", "created"),
        ("drift", "created"),
    ]
    agents = cluster.objects("deployments")
    drift = agents["digits-agent-drift"]
    assert drift["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "scanflow-agents",
        "scanflow.io/team": TEAM,
        "scanflow.io/application": "digits",
        "scanflow.io/agent": "drift",
        "app.kubernetes.io/component": "agent",
    }
    container = _container(drift)
    assert container["command"] == [
        "scanflow",
        "run",
        "team.agents:DriftWatch",
        "--name",
        "drift",
        "--http-port",
        "8080",
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    probes = {
        kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")
    }
    assert probes == {
        "startup": {"path": "/livez", "port": "http"},
        "readiness": {"path": "/readyz", "port": "http"},
        "liveness": {"path": "/livez", "port": "http"},
    }
    env = _env(container)
    assert env["SCANFLOW_NAMESPACE"] == BUS_NAMESPACE
    assert env["SCANFLOW_NATS__URL"] == "nats://nats.mlops:4222"
    assert env["SCANFLOW_MLFLOW__TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert env["SCANFLOW_AGENTS__DRIFT"] == '{"threshold": 0.2}'
    assert drift["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    tracker = _container(agents["digits-agent-tracker"])
    command = ["scanflow", "run", "scanflow_agents.builtin.tracker:Tracker", "--name", "tracker"]
    assert tracker["command"] == [*command, "--http-port", "8080"]
    # The reference resolves (the pod would otherwise crash-loop at start).
    assert [c.__name__ for c in load_agent_classes(command[2])] == ["Tracker"]
    assert agents["serve-m"]["metadata"]["labels"]["scanflow.io/application"] == "digits"

    assert (await platform.deploy_application(application)).outcome == "unchanged"
    fewer = load_application(
        {**application.model_dump(), "agents": [{"name": "tracker", "agent": "tracker"}]}
    )
    pruned = await platform.deploy_application(fewer)
    assert [(a.node, a.outcome) for a in pruned.agents] == [
        ("tracker", "unchanged"),
        ("drift", "deleted"),
    ]
    assert "digits-agent-drift" not in cluster.objects("deployments")
    gone = await platform.delete_application(fewer)
    assert [r.outcome for r in gone] == ["deleted", "absent", "deleted"]
    assert cluster.objects("deployments") == {}


def test_the_platform_keeps_the_contract_and_imports_lightly() -> None:
    import subprocess
    import sys

    from scanflow_agents.platforms import Platform

    assert isinstance(KubernetesPlatform(), Platform)
    code = (
        "import sys, scanflow_agents.platforms.kubernetes;"
        "print('kubernetes' in sys.modules, 'fastapi' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


async def test_a_team_the_planner_does_not_manage_is_refused_by_name(
    cluster: Cluster, settings: KubernetesPlatformSettings
) -> None:
    # Its namespace has no Role: the planner says what to change, and sends nothing.
    managed = settings.model_copy(update={"teams": (TEAM,)})
    workflow = Workflow.model_validate(
        {"name": "serve", "kind": "online", "nodes": [{"name": "m", "model_uri": "m:/1"}]}
    )
    async with KubernetesPlatform(managed) as platform:
        with pytest.raises(PlatformError) as caught:
            await platform.deploy(workflow, team="cellar")
    message = str(caught.value)
    assert "team 'cellar' is not one this planner manages (teams: vision)" in message
    assert "add 'cellar' to kubernetes.teams" in message
    assert not cluster.emulator.objects


def test_the_default_team_must_be_managed() -> None:
    with pytest.raises(ValueError, match=r"team 'default' .* not among the managed teams"):
        KubernetesPlatformSettings(teams=("vision",))
