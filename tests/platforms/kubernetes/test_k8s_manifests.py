"""Every object the platform generates: valid for the API server, and "restricted" pods.

Rendered from the digits example and the four built-in agents (plus a user
agent with a service account), validated with ``kubernetes-validate
--strict`` against Kubernetes 1.30 and the newest schemas it ships, then
checked against the Pod Security "restricted" level. The build Job is the
documented exception (it runs in the build namespace).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from scanflow_agents.platforms.kubernetes import KubernetesPlatformSettings
from scanflow_agents.platforms.kubernetes.building import BuildContext, builder_objects
from scanflow_agents.platforms.kubernetes.jobs import RunContext, argo_workflow, job
from scanflow_agents.platforms.kubernetes.manifests import (
    agent_deployment,
    service,
    service_deployment,
)
from scanflow_agents.workflows import (
    AgentSpec,
    ExecutorNode,
    ServiceNode,
    Workflow,
    load_application,
)

ROOT = Path(__file__).resolve().parents[3]
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SETTINGS = KubernetesPlatformSettings(
    tracking_uri="http://mlflow.mlops:5000",
    nats_url="nats://nats.mlops:4222",
    registry="registry.example.com/ml",
    registry_secret="push-credentials",
    env_secret="scanflow-credentials",
    image_pull_secrets=("pull-credentials",),
)


def _run(workflow: Workflow, images: dict[str, str]) -> RunContext:
    return RunContext(
        settings=SETTINGS,
        team="vision",
        workflow=workflow,
        run_id="r1",
        images=images,
        application="digits",
    )


def _objects() -> list[dict[str, Any]]:
    application = load_application(ROOT / "examples" / "digits" / "application.yaml")
    found: list[dict[str, Any]] = []
    for workflow in application.workflows:
        for node in workflow.nodes:
            if isinstance(node, ServiceNode):
                found.append(service_deployment(SETTINGS, "vision", workflow.name, node, "digits"))
                found.append(service(SETTINGS, "vision", workflow.name, node, "digits"))
            else:
                assert isinstance(node, ExecutorNode)
                found.append(job(_run(workflow, {node.name: "img:1"}), node))
    for name in ("tracker", "checker", "improver", "planner"):
        found.append(
            agent_deployment(SETTINGS, "vision", "digits", AgentSpec(name=name, agent=name))
        )
    with_account = SETTINGS.model_copy(update={"agent_service_account": "planner"})
    spec = AgentSpec(name="drift", agent="team.agents:DriftWatch", config={"x": 1})
    found.append(agent_deployment(with_account, "vision", "digits", spec))
    context = BuildContext("train/train", "train-train", {"Dockerfile": "FROM x\n"})
    found.extend(builder_objects(SETTINGS, context, "registry.example.com/ml"))
    return found


def _pods(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"])


def _argo_pods() -> list[dict[str, Any]]:
    # Argo's CRD is not in the Kubernetes schemas: each step becomes the pod Argo
    # would make of it, and that pod is validated.
    application = load_application(ROOT / "examples" / "digits" / "application.yaml")
    train = application.workflow("train")
    images = {n.name: "img:1" for n in train.executors}
    body = argo_workflow(_run(train, images))
    spec = body["spec"]
    pods = []
    for template in spec["templates"][1:]:
        container = {"name": "main", **template["container"]}
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"r1-{template['name']}",
                    "labels": template["metadata"]["labels"],
                },
                "spec": {
                    "containers": [container],
                    "volumes": spec["volumes"],
                    "securityContext": spec["securityContext"],
                    "automountServiceAccountToken": spec["automountServiceAccountToken"],
                    "imagePullSecrets": spec["imagePullSecrets"],
                    "activeDeadlineSeconds": template["activeDeadlineSeconds"],
                    "restartPolicy": "Never",
                },
            }
        )
    return pods


OBJECTS = _objects() + _argo_pods()


@pytest.mark.parametrize("version", VERSIONS)
def test_every_generated_object_passes_strict_validation(version: str) -> None:
    for obj in OBJECTS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_command_line_validator_agrees(tmp_path: Path) -> None:
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(OBJECTS))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.30.0", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _restricted(pod: dict[str, Any]) -> list[str]:
    problems = []
    security = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False and not pod.get("serviceAccountName"):
        problems.append("mounts a token")
    if (security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("seccomp")
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if context.get("capabilities") != {"drop": ["ALL"]}:
            problems.append(f"{name}: capabilities")
        if not (context.get("runAsNonRoot") or security.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        limits = (container.get("resources") or {}).get("limits") or {}
        if "cpu" in limits:
            problems.append(f"{name}: CPU limit")
    return problems


def test_every_pod_but_the_builder_is_restricted_and_holds_no_token() -> None:
    checked = 0
    for obj in OBJECTS:
        if obj["kind"] not in ("Deployment", "Job", "Pod"):
            continue
        pod = obj["spec"] if obj["kind"] == "Pod" else _pods(obj)
        if obj["metadata"]["labels"].get("app.kubernetes.io/component") == "build":
            assert obj["metadata"]["namespace"] == "scanflow-builds"
            assert pod["automountServiceAccountToken"] is False
            continue
        assert _restricted(pod) == [], obj["metadata"]["name"]
        token = pod["automountServiceAccountToken"]
        assert token is (pod.get("serviceAccountName") == "planner"), obj["metadata"]["name"]
        checked += 1
    assert checked == 12  # 1 service, 3 steps, 5 agents, 3 Argo steps


def _agents() -> dict[str, dict[str, Any]]:
    return {
        obj["metadata"]["labels"]["scanflow.io/agent"]: obj
        for obj in OBJECTS
        if obj["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"
    }


def test_agent_pods_serve_probes_and_have_a_memory_limit() -> None:
    agents = _agents()
    assert sorted(agents) == ["checker", "drift", "improver", "planner", "tracker"]
    for name, obj in agents.items():
        (container,) = _pods(obj)["containers"]
        # scanflow run serves /livez and /readyz on the port the probes ask.
        assert container["command"][-2:] == ["--http-port", "8080"], name
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["resources"]["limits"] == {"memory": "768Mi"}


def test_only_the_planner_is_replaced_by_recreating_it() -> None:
    # Leader election lets a new agent pod start beside the old one; the planner
    # follows runs whether it leads or not, so two must never overlap.
    strategies = {name: obj["spec"]["strategy"] for name, obj in _agents().items()}
    assert strategies.pop("planner") == {"type": "Recreate"}
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert all(strategy == rolling for strategy in strategies.values()), strategies


def test_the_rendered_port_is_the_one_set() -> None:
    settings = SETTINGS.model_copy(update={"agent_http_port": 9100})
    rendered = agent_deployment(settings, "vision", "digits", AgentSpec(name="t", agent="tracker"))
    (container,) = _pods(rendered)["containers"]
    assert container["command"][-2:] == ["--http-port", "9100"]
    assert container["ports"][0]["containerPort"] == 9100


def test_the_jobs_and_the_argo_workflow_of_one_run_agree() -> None:
    # Both are built from one RunContext: the same namespace, run labels, images
    # and parameters, whichever way the run goes.
    train = load_application(ROOT / "examples" / "digits" / "application.yaml").workflow("train")
    images = {n.name: f"img/{n.name}:1" for n in train.executors}
    first = train.executors[0]
    run = RunContext(
        settings=SETTINGS,
        team="vision",
        workflow=train,
        run_id="r1",
        images=images,
        parameters={first.name: {"epochs": 3}},
        application="digits",
    )
    argo = argo_workflow(run)
    steps = {t["name"]: t for t in argo["spec"]["templates"][1:]}
    assert argo["metadata"]["namespace"] == run.namespace == SETTINGS.namespace("vision")
    for node in train.executors:
        body = job(run, node)
        assert body["metadata"]["namespace"] == run.namespace
        assert body["metadata"]["labels"] == {**argo["metadata"]["labels"], **{
            "scanflow.io/node": node.name, "app.kubernetes.io/component": "executor"
        }}  # fmt: skip
        (container,) = body["spec"]["template"]["spec"]["containers"]
        step = steps[node.name]["container"]
        assert container["image"] == step["image"] == images[node.name]
        assert container["command"] == step["command"]
    (container,) = job(run, first)["spec"]["template"]["spec"]["containers"]
    assert container["command"][-2:] == ["--epochs", "3"]
