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
from pydantic import ValidationError

from scanflow_agents.platforms.kubernetes import KubernetesPlatformSettings, PodEnv
from scanflow_agents.platforms.kubernetes.building import BuildContext, builder_objects
from scanflow_agents.platforms.kubernetes.jobs import RunContext, argo_workflow, job
from scanflow_agents.platforms.kubernetes.manifests import (
    agent_deployment,
    service,
    service_deployment,
    serving_template,
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
    pod_env=(
        PodEnv(name="SCANFLOW_NATS__USER", value="serving"),
        PodEnv(name="SCANFLOW_NATS__PASSWORD", secret="scanflow-nats", key="serving"),
    ),
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
        assert body["metadata"]["labels"] == {
            **argo["metadata"]["labels"],
            **{"scanflow.io/node": node.name, "app.kubernetes.io/component": "executor"},
        }
        (container,) = body["spec"]["template"]["spec"]["containers"]
        step = steps[node.name]["container"]
        assert container["image"] == step["image"] == images[node.name]
        assert container["command"] == step["command"]
    (container,) = job(run, first)["spec"]["template"]["spec"]["containers"]
    assert container["command"][-2:] == ["--epochs", "3"]


@pytest.mark.parametrize(
    ("setting", "url", "host"),
    [
        ("nats_url", "nats://nats:4222", "nats"),
        ("nats_url", "nats://nats.mlops:4222,nats://nats-1:4222", "nats-1"),
        ("tracking_uri", "http://mlflow:5000", "mlflow"),
        ("registry_uri", "http://registry/", "registry"),
    ],
)
def test_a_short_service_name_is_refused_at_start(setting: str, url: str, host: str) -> None:
    # Pods in team namespaces would look the Service up in their own namespace.
    with pytest.raises(ValidationError) as caught:
        KubernetesPlatformSettings.model_validate({setting: url})
    message = str(caught.value)
    assert f"{setting} " in message
    assert f"Service {host!r} by its short name" in message
    assert f"{host}.<its namespace>.svc" in message


@pytest.mark.parametrize(
    "url",
    ["nats://nats.mlops:4222", "nats://nats.mlops.svc.cluster.local:4222", "nats://10.0.0.7:4222",
     "nats://localhost:4222", "http://mlflow.example.com"],
)  # fmt: skip
def test_qualified_names_and_addresses_are_taken(url: str) -> None:
    assert KubernetesPlatformSettings(nats_url=url).nats_url == url


def test_every_container_but_the_builders_gets_the_pod_environment() -> None:
    # Model servers, steps and agents connect to NATS and MLflow as the agents do.
    wanted = [item.entry() for item in SETTINGS.pod_env]
    for obj in OBJECTS:
        build = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "build"
        if build or obj["kind"] not in ("Deployment", "Job", "Pod"):
            continue
        pod = obj["spec"] if obj["kind"] == "Pod" else _pods(obj)
        for container in pod["containers"]:
            assert [e for e in container["env"] if e in wanted] == wanted, obj["metadata"]["name"]


@pytest.mark.parametrize(
    ("given", "wrong"),
    [
        ({"name": "X"}, "either a value, or a secret and its key"),
        ({"name": "X", "value": "v", "secret": "s", "key": "k"}, "either a value"),
        ({"name": "X", "secret": "s"}, "either a value, or a secret and its key"),
    ],
)
def test_a_pod_variable_has_one_source(given: dict[str, str], wrong: str) -> None:
    with pytest.raises(ValidationError, match=wrong):
        PodEnv.model_validate(given)


def test_a_model_servers_tmp_has_a_size_limit() -> None:
    # Downloaded artifacts fill /tmp: past the limit the pod is evicted, the node kept.
    (deployment,) = [
        o for o in OBJECTS if o["metadata"]["name"] == "serve-model" and o["kind"] == "Deployment"
    ]
    volumes = {v["name"]: v for v in _pods(deployment)["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
    unlimited = SETTINGS.model_copy(update={"serving_tmp_size": None})
    node = ServiceNode(name="model", model_uri="models:/digits/1")
    spec = service_deployment(unlimited, "vision", "serve", node)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in spec["volumes"]}["tmp"]["emptyDir"] == {}


def test_a_node_that_declares_no_resources_still_requests_some() -> None:
    # A ResourceQuota refuses pods without requests; a default is no limit to be killed at.
    node = ServiceNode(name="model", model_uri="models:/digits/1")
    spec = service_deployment(SETTINGS, "vision", "serve", node)["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    sized = ServiceNode(name="model", model_uri="models:/digits/1", resources={"memory": "1Gi"})
    spec = service_deployment(SETTINGS, "vision", "serve", sized)["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }


@pytest.mark.parametrize("replica_reports", [False, True])
def test_model_servers_log_their_own_reports_to_mlflow_only_when_asked(
    replica_reports: bool,
) -> None:
    """By default the tracker logs each window per node; a fleet of replicas
    each logging ~350 numbers a report would flood MLflow."""
    settings = SETTINGS.model_copy(update={"replica_reports": replica_reports})
    node = ServiceNode(name="model", model_uri="models:/digits/1")
    template = serving_template(settings, "serve", node, {"app": "serve"})
    (container,) = template["spec"]["containers"]
    command = " ".join([*container.get("command", []), *container.get("args", [])])
    assert "--tracking-uri http://mlflow.mlops:5000" in command  # the model loads from it
    assert ("--report-tracking-uri" in command) is replica_reports
