"""The chart and the planner as one cluster: every reference between them resolves.

For each documented value set and each example application, the cluster is
what the documented install creates before ``helm install``, what the chart
renders, and what the planner makes for the application with the settings the
chart gives it (its Deployments, Services, Jobs, Argo Workflows and build
Jobs). A pod naming a Secret that is only in another namespace, a URL whose
Service is not where the name points, an object in a namespace nobody creates,
or a model server reporting where no agent reads: each is a fault a real
cluster would show as a failed install, a pod that never starts, or silence.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from scanflow_agents.builtin.planner.settings import PlannerSettings

from scanflow_agents import Settings
from scanflow_agents.platforms import PlatformError
from scanflow_agents.platforms.kubernetes import KubernetesPlatformSettings
from scanflow_agents.platforms.kubernetes.building import (
    builder_objects,
    needs_build,
    node_context,
    node_image,
)
from scanflow_agents.platforms.kubernetes.jobs import RunContext, argo_workflow, job
from scanflow_agents.platforms.kubernetes.manifests import (
    agent_deployment,
    service,
    service_deployment,
)
from scanflow_agents.workflows import Application
from scanflow_agents.workflows.loading import load_application

from .cluster import Cluster, Obj, faults, service_of
from .conftest import ROOT, VALUE_SETS, Render

RELEASE_NAMESPACE = "agents"
APPLICATIONS = {
    "digits": ROOT / "examples" / "digits" / "application.yaml",
    "wine": ROOT / "examples" / "wine" / "application.yaml",
    "churn": ROOT / "examples" / "churn" / "application.yaml",
}
#: The Secrets of the values that generated pods name too: the documented install
#: puts a copy in every team namespace (and the pull Secrets in the build namespace).
CREDENTIAL_SECRETS = ("nats", "mlflow", "natsAuthorization", "envFromSecret", "imagePullSecrets")


def _values(value_set: str) -> dict[str, Any]:
    path = VALUE_SETS[value_set]
    values: dict[str, Any] = yaml.safe_load(path.read_text()) if path else {}
    defaults = yaml.safe_load((ROOT / "helm" / "scanflow-agents" / "values.yaml").read_text())
    return _merged(defaults, values)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merged(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def _secrets_of(values: dict[str, Any]) -> dict[str, list[str]]:
    """The Secrets (by purpose) the values name, which the install creates."""
    named = {
        "nats": [values["nats"]["existingSecret"]["name"]],
        "mlflow": [values["mlflow"]["existingSecret"]["name"]],
        "envFromSecret": [values["envFromSecret"]],
        "imagePullSecrets": list(values["imagePullSecrets"]),
        "natsAuthorization": [values["natsAuthorization"]["existingSecret"]]
        if values["natsAuthorization"]["enabled"]
        else [],
    }
    for agent in values["agents"].values():
        for item in agent.get("env", []):
            if "secretKeyRef" in item.get("valueFrom", {}):
                named.setdefault("agents", []).append(item["valueFrom"]["secretKeyRef"]["name"])
    return {purpose: [n for n in names if n] for purpose, names in named.items()}


def documented_install(values: dict[str, Any]) -> list[Obj]:
    """What the Helm guide has a platform engineer create before ``helm install``.

    NATS and MLflow (their own charts) with their Services where the values'
    URLs point from the release namespace; the credentials Secrets in the
    release namespace, and a copy of those generated pods use in each team
    namespace (pull Secrets also in the build namespace); the ConfigMaps of
    agents whose code is mounted from one.
    """
    objects: list[Obj] = []
    namespaces = {RELEASE_NAMESPACE}
    for url in (values["nats"]["url"], values["mlflow"]["trackingUri"]):
        host = url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
        target = service_of(host, RELEASE_NAMESPACE)
        assert target is not None, f"the documented {url} is not a Service in the cluster"
        namespaces.add(target[0])
        objects.append(_object("Service", *target))
    k8s = values["kubernetes"]
    teams = [k8s["namespacePrefix"] + team for team in k8s["teams"]]
    secrets = _secrets_of(values)
    for purpose, names in secrets.items():
        where = [RELEASE_NAMESPACE]
        if purpose in CREDENTIAL_SECRETS:
            where += teams
        if purpose == "imagePullSecrets" and k8s["registry"]:
            where.append(k8s["buildNamespace"])
        objects += [_object("Secret", ns, name) for name in names for ns in where]
    if k8s["registry"] and k8s["registrySecret"]:
        objects.append(_object("Secret", k8s["buildNamespace"], k8s["registrySecret"]))
    for agent in values["agents"].values():
        if agent.get("code"):
            objects.append(_object("ConfigMap", RELEASE_NAMESPACE, agent["code"]["configMap"]))
    objects += [{"kind": "Namespace", "metadata": {"name": ns}} for ns in sorted(namespaces)]
    return objects


def _object(kind: str, namespace: str, name: str) -> Obj:
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace}}


def _settings_of(documents: list[Obj], tmp_path: Path) -> Settings:
    (config_map,) = [
        d for d in documents if d["kind"] == "ConfigMap" and "settings.yaml" in d["data"]
    ]
    path = tmp_path / "settings.yaml"
    path.write_text(config_map["data"]["settings.yaml"])
    return Settings.load(str(path))


def planner_objects(settings: Settings, application: Application) -> list[Obj]:
    """What the planner makes for ``application``: deploy, run (Jobs and Argo), build."""
    options = PlannerSettings.from_settings(settings)
    assert options.platform == "kubernetes"
    platform = KubernetesPlatformSettings.from_settings(settings, **options.kubernetes)
    team = application.team
    objects: list[Obj] = []
    for workflow in application.workflows:
        for node in workflow.services:
            objects.append(
                service_deployment(platform, team, workflow.name, node, application.name)
            )
            objects.append(service(platform, team, workflow.name, node, application.name))
        try:
            images = {n.name: node_image(platform, workflow, n) for n in workflow.executors}
        except PlatformError:
            continue  # no registry to build the steps' images: the planner refuses the run
        if workflow.executors:
            run = RunContext(
                settings=platform,
                team=team,
                workflow=workflow,
                run_id="r1",
                images=images,
                application=application.name,
            )
            objects += [job(run, node) for node in workflow.executors]
            if platform.argo != "never":
                objects.append(argo_workflow(run))
        if platform.registry:
            for built in workflow.nodes:
                if needs_build(built):
                    context = node_context(platform, workflow, built)
                    objects += builder_objects(platform, context, platform.registry)
    for agent in application.agents:
        objects.append(agent_deployment(platform, team, application.name, agent))
    return objects


def _nats_credentials(documents: list[Obj]) -> set[str]:
    names: set[str] = set()
    for doc in documents:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                names |= {
                    e["name"]
                    for e in container.get("env", [])
                    if e["name"]
                    in ("SCANFLOW_NATS__USER", "SCANFLOW_NATS__PASSWORD", "SCANFLOW_NATS__TOKEN")
                }
    return names


@pytest.mark.parametrize("application", sorted(APPLICATIONS))
def test_chart_and_planner_make_one_working_cluster(
    render: Render, value_set: str, application: str, tmp_path: Path
) -> None:
    app = load_application(APPLICATIONS[application])
    values = _values(value_set)
    # The install for this application supervises its team too.
    teams = sorted({*values["kubernetes"]["teams"], app.team})
    values["kubernetes"]["teams"] = teams
    documents = render(VALUE_SETS[value_set], "--set-json", f"kubernetes.teams={json.dumps(teams)}")
    settings = _settings_of(documents, tmp_path)
    cluster = Cluster(
        objects=documented_install(values) + documents + planner_objects(settings, app),
        bus_namespace=settings.namespace,
        given_namespaces={RELEASE_NAMESPACE},
        nats_credentials=_nats_credentials(documents),
    )
    found = faults(cluster)
    assert not found, "\n".join(found)


GUIDE = ROOT / "docs" / "guides" / "helm.md"
_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def guide_install(text: str) -> tuple[list[Obj], str, Path]:
    """What the Helm guide's walkthrough creates before and after ``helm install``, the
    release namespace, and the values file it installs the chart with.

    Namespaces (``kubectl create namespace``), Secrets (``kubectl -n NS create
    secret``), Services (``kubectl -n NS expose deployment``, and a chart
    installed from a repository, whose Service is named after its release, as
    the official NATS chart's is).
    """
    objects: list[Obj] = []
    release: tuple[str, Path] | None = None
    commands = [
        line for block in _BLOCK.findall(text) for line in block.replace("\\\n", " ").splitlines()
    ]
    for command in commands:
        words = shlex.split(command.split("#", 1)[0]) if command.strip() else []
        if words[:3] == ["kubectl", "create", "namespace"]:
            objects.append({"kind": "Namespace", "metadata": {"name": words[3]}})
        elif words[:1] == ["kubectl"] and words[1] == "-n" and words[3:5] == ["create", "secret"]:
            objects.append(_object("Secret", words[2], words[6]))
        elif (
            words[:1] == ["kubectl"] and words[1] == "-n" and words[3:5] == ["expose", "deployment"]
        ):
            objects.append(_object("Service", words[2], words[5]))
        elif words[:2] == ["helm", "install"]:
            namespace = words[words.index("--namespace") + 1]
            if words[3] == "helm/scanflow-agents":
                release = namespace, ROOT / words[words.index("-f") + 1]
            else:
                objects.append(_object("Service", namespace, words[2]))
    assert release is not None, "the guide installs no scanflow-agents release"
    return objects, *release


def test_the_guides_walkthrough_makes_a_working_cluster(render: Render, tmp_path: Path) -> None:
    installed, release_namespace, values = guide_install(GUIDE.read_text())
    # The walkthrough installs the documented value set the other tests check too.
    assert values == VALUE_SETS["application"]
    assert release_namespace == RELEASE_NAMESPACE
    documents = render(values)
    settings = _settings_of(documents, tmp_path)
    app = load_application(APPLICATIONS["digits"])
    assert app.team in yaml.safe_load(values.read_text())["kubernetes"]["teams"]
    cluster = Cluster(
        objects=installed + documents + planner_objects(settings, app),
        bus_namespace=settings.namespace,
        nats_credentials=_nats_credentials(documents),
    )
    found = faults(cluster)
    assert not found, "\n".join(found)
    # And nothing the walkthrough does is left out of the model the other value sets use.
    modelled = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in documented_install(_values("application"))
    }
    done = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in installed}
    assert modelled <= done, sorted(modelled - done)
