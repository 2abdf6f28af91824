"""The chart as rendered: lint, API schemas, and the policies it promises.

Every check runs over each documented value set (defaults; all built-in
agents with an application; a user agent from a derived image).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from scanflow_agents.runtime.loading import load_agent_classes

from scanflow_agents import Settings
from scanflow_agents.platforms.kubernetes import permissions

from .conftest import CHART, VALUE_SETS, Render, run_helm

KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
SETTINGS_FILE = "/etc/scanflow/settings/settings.yaml"
CREDENTIAL_WORDS = ("PASSWORD", "TOKEN", "SECRET", "KEY", "CREDENTIAL")


def _kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def _pod_specs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = [d["spec"]["template"]["spec"] for d in _kind(documents, "Deployment")]
    return specs + [d["spec"] for d in _kind(documents, "Pod")]


def test_lint_strict(helm: str, value_set: str) -> None:
    values = VALUE_SETS[value_set]
    done = run_helm(helm, "lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_the_kubernetes_api(
    documents: list[dict[str, Any]], version: str
) -> None:
    for doc in documents:
        # strict: unknown fields are errors, as with kubectl's server-side validation.
        kubernetes_validate.validate(doc, version, strict=True)


EXECUTOR_SUFFIX = "-argo-executor"


def _planner_roles(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles the planner's account is bound to (not Argo's executor's)."""
    return [
        r for r in _kind(documents, "Role") if not r["metadata"]["name"].endswith(EXECUTOR_SUFFIX)
    ]


def _granted(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    granted: dict[tuple[str, str], list[str]] = {}
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field} of {role['metadata']}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), []).extend(rule["verbs"])
    return {key: sorted(verbs) for key, verbs in granted.items()}


def _wanted(*scopes: permissions.Scope) -> dict[tuple[str, str], list[str]]:
    # The platform's own table: what its code calls (its emulator tests check that).
    return {
        (rule.group, rule.resource): sorted(rule.verbs)
        for scope in scopes
        for rule in permissions.rules(scope)
    }


def test_rbac_is_namespaced_exact_and_without_wildcards(
    documents: list[dict[str, Any]], value_set: str
) -> None:
    kinds = {doc["kind"] for doc in documents}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    values_file = VALUE_SETS[value_set]
    values = yaml.safe_load(values_file.read_text()) if values_file else {}
    kubernetes: dict[str, Any] = {
        "namespacePrefix": "scanflow-",
        "teams": ["default"],
        "argo": "never",
        "registry": "",
        "buildNamespace": "scanflow-builds",
    }
    kubernetes.update(values.get("kubernetes", {}))
    team_scopes: tuple[permissions.Scope, ...] = (
        ("team",) if kubernetes["argo"] == "never" else ("team", "argo")
    )
    wanted = {
        kubernetes["namespacePrefix"] + team: _wanted(*team_scopes) for team in kubernetes["teams"]
    }
    if kubernetes["registry"]:
        wanted[kubernetes["buildNamespace"]] = _wanted("builds")
    roles = _planner_roles(documents)
    assert {r["metadata"]["namespace"]: _granted(r) for r in roles} == wanted
    bindings = {
        b["metadata"]["namespace"]: b
        for b in _kind(documents, "RoleBinding")
        if not b["metadata"]["name"].endswith(EXECUTOR_SUFFIX)
    }
    assert sorted(bindings) == sorted(wanted)
    for role in roles:
        binding = bindings[role["metadata"]["namespace"]]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-scanflow-agents", "namespace": "agents"}
        ]


def test_the_namespaces_the_planner_acts_in_are_created_and_kept(
    documents: list[dict[str, Any]], render: Render
) -> None:
    # Helm applies Namespaces before the Roles in them; a Role in a missing
    # namespace would stop the install.
    created = {d["metadata"]["name"]: d["metadata"] for d in _kind(documents, "Namespace")}
    for role in _planner_roles(documents):
        meta = created[role["metadata"]["namespace"]]
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
        level = "privileged" if role["metadata"]["name"].endswith("-builds") else "restricted"
        assert meta["labels"]["pod-security.kubernetes.io/enforce"] == level
    assert len(created) == len(_planner_roles(documents))
    none = render(VALUE_SETS["application"], "--set", "kubernetes.createNamespaces=false")
    assert not _kind(none, "Namespace")


def test_argo_steps_have_their_executor_account_in_every_team_namespace(
    documents: list[dict[str, Any]], value_set: str
) -> None:
    (config_map,) = [c for c in _kind(documents, "ConfigMap") if "settings.yaml" in c["data"]]
    planner = yaml.safe_load(config_map["data"]["settings.yaml"])["agents"].get("planner", {})
    platform = planner.get("kubernetes", {})
    argo = platform.get("argo", "never") != "never"
    teams = {
        r["metadata"]["namespace"]
        for r in _planner_roles(documents)
        if "-builds" not in r["metadata"]["name"]
    }
    executors = {
        (r["metadata"]["namespace"], tuple(map(json.dumps, r["rules"])))
        for r in _kind(documents, "Role")
        if r["metadata"]["name"].endswith(EXECUTOR_SUFFIX)
    }
    rules = (
        json.dumps(
            {
                "apiGroups": ["argoproj.io"],
                "resources": ["workflowtaskresults"],
                "verbs": ["create", "patch"],
            }
        ),
    )
    assert executors == ({(ns, rules) for ns in teams} if argo else set()), value_set
    accounts = {
        (a["metadata"]["namespace"], a["metadata"]["name"])
        for a in _kind(documents, "ServiceAccount")
        if a["metadata"]["namespace"] != "agents"
    }
    name = platform.get("argo_executor_service_account")
    assert accounts == ({(ns, name) for ns in teams} if argo else set())
    for binding in _kind(documents, "RoleBinding"):
        if binding["metadata"]["name"].endswith(EXECUTOR_SUFFIX):
            ns = binding["metadata"]["namespace"]
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": name, "namespace": ns}
            ]


def test_the_planner_is_told_where_to_build(render: Render) -> None:
    documents = render(VALUE_SETS["application"])
    (configmap,) = [
        d for d in _kind(documents, "ConfigMap") if d["metadata"]["name"].endswith("-settings")
    ]
    platform = yaml.safe_load(configmap["data"]["settings.yaml"])["agents"]["planner"]["kubernetes"]
    assert platform["registry"] == "registry.example.com/ml"
    assert platform["registry_secret"] == "push-credentials"
    assert platform["build_namespace"] == "scanflow-builds"
    # Namespaces are never created by the planner under the chart: that needs a ClusterRole.
    assert not platform.get("create_namespaces", False)


def test_every_container_is_probed_limited_and_restricted(
    documents: list[dict[str, Any]],
) -> None:
    for deployment in _kind(documents, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
                assert container[probe]["httpGet"] == {"path": path, "port": "http"}
                # As the platform's own agent probes: not the kubelet's 1 s default.
                assert container[probe]["timeoutSeconds"] == 5
            assert container["ports"] == [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"}
            ]
    for spec in _pod_specs(documents):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {v["name"]: v for v in spec["volumes"]}["tmp"]["emptyDir"]
        for container in spec["containers"]:
            assert container["resources"]["limits"]["memory"]
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in context
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/tmp"]["name"] == "tmp"  # the only writable place


def test_secrets_are_referenced_never_inlined(documents: list[dict[str, Any]]) -> None:
    assert not _kind(documents, "Secret")
    for spec in _pod_specs(documents):
        for container in spec["containers"]:
            for item in container.get("env", []):
                if any(word in item["name"] for word in CREDENTIAL_WORDS):
                    assert "value" not in item, f"{item['name']} is inlined"
                    assert "secretKeyRef" in item["valueFrom"]
    for config_map in _kind(documents, "ConfigMap"):
        data = {key: yaml.safe_load(text) for key, text in config_map["data"].items()}
        # The planner's pods get credentials as Secret references, never values.
        platform = data.get("settings.yaml", {}).get("agents", {}).get("planner", {})
        for item in platform.get("kubernetes", {}).pop("pod_env", []):
            assert set(item) == {"name", "secret", "key"} or "value" in item, item
            if "value" in item:
                assert not any(w in item["name"] for w in ("PASSWORD", "TOKEN")), item
        text = json.dumps(data).lower()
        assert "password" not in text
        assert "token" not in text


def test_only_agents_that_call_the_api_get_a_token(documents: list[dict[str, Any]]) -> None:
    for account in _kind(documents, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    for deployment in _kind(documents, "Deployment"):
        agent = deployment["metadata"]["labels"]["scanflow.io/agent"]
        mounted = deployment["spec"]["template"]["spec"]["automountServiceAccountToken"]
        assert mounted is (agent == "planner"), agent
    for pod in _kind(documents, "Pod"):
        # Only the planner's preflight test asks the API server, as the planner.
        preflight = pod["metadata"]["name"].endswith("-test-preflight")
        assert pod["spec"]["automountServiceAccountToken"] is preflight


def test_only_the_planner_recreates_and_replicated_agents_have_a_budget(
    documents: list[dict[str, Any]],
) -> None:
    # Leader election lets every agent roll (a new pod beside the old one) but
    # the planner, which follows runs as one process.
    budgets = {p["metadata"]["name"]: p for p in _kind(documents, "PodDisruptionBudget")}
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    for deployment in _kind(documents, "Deployment"):
        name, spec = deployment["metadata"]["name"], deployment["spec"]
        agent = deployment["metadata"]["labels"]["scanflow.io/agent"]
        assert spec["strategy"] == ({"type": "Recreate"} if agent == "planner" else rolling), name
        if spec["replicas"] == 1:
            assert name not in budgets
        else:
            assert budgets[name]["spec"]["selector"] == spec["selector"]
            assert budgets[name]["spec"]["maxUnavailable"] == 1
    assert set(budgets) <= {d["metadata"]["name"] for d in _kind(documents, "Deployment")}


def test_the_settings_file_is_what_the_agents_read(
    documents: list[dict[str, Any]], tmp_path: Path
) -> None:
    (config_map,) = [c for c in _kind(documents, "ConfigMap") if "settings.yaml" in c["data"]]
    path = tmp_path / "settings.yaml"
    path.write_text(config_map["data"]["settings.yaml"])
    settings = Settings.load(str(path))
    assert settings.http.port == 8080
    for deployment in _kind(documents, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        assert command[:4] == ["scanflow", "--settings", SETTINGS_FILE, "run"]
        reference, name = command[4], command[command.index("--name") + 1]
        assert name == deployment["metadata"]["labels"]["scanflow.io/agent"]
        assert name in settings.agents
        if reference.startswith("scanflow_agents."):
            (klass,) = load_agent_classes(reference)  # a built-in: it must resolve here
            assert klass.name == name


def test_the_replica_count_reaches_every_agent(render: Render, tmp_path: Path) -> None:
    # The chart's nats.replicas is the agents' settings.nats.replicas: the streams
    # and buckets they make keep that many copies on a NATS cluster.
    documents = render(
        None, "--set", "nats.url=nats://n1:4222\\,nats://n2:4222", "--set", "nats.replicas=3"
    )
    (config_map,) = [c for c in _kind(documents, "ConfigMap") if "settings.yaml" in c["data"]]
    path = tmp_path / "settings.yaml"
    path.write_text(config_map["data"]["settings.yaml"])
    assert Settings.load(str(path)).nats.replicas == 3


def test_pods_roll_when_settings_change(render: Render) -> None:
    def checksums(*options: str) -> dict[str, str]:
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"][
                "checksum/settings"
            ]
            for d in _kind(render(None, *options), "Deployment")
        }

    before = checksums()
    after = checksums("--set", "agents.checker.config.alpha=0.05")
    assert before.keys() == after.keys()
    assert all(before[name] != after[name] for name in before)
    assert checksums() == before  # rendering is deterministic


def test_a_user_agents_image_and_config(render: Render) -> None:
    documents = render(VALUE_SETS["user-agent"])
    deployments = {d["metadata"]["name"]: d for d in _kind(documents, "Deployment")}
    assert sorted(deployments) == [
        "rel-scanflow-agents-fraud-watch",
        "rel-scanflow-agents-planner",
        "rel-scanflow-agents-spend-guard",
    ]
    (container,) = deployments["rel-scanflow-agents-fraud-watch"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == "registry.example.com/ml/fraud-agents:1.4.2"
    assert "fraud.agents:FraudWatch" in container["command"]
    # Code from a ConfigMap: mounted read-only and importable.
    guard = deployments["rel-scanflow-agents-spend-guard"]["spec"]["template"]["spec"]
    assert {"name": "code", "configMap": {"name": "spend-guard-code"}} in guard["volumes"]
    (guard_container,) = guard["containers"]
    assert {"name": "PYTHONPATH", "value": "/opt/scanflow/code"} in guard_container["env"]
    assert {"name": "code", "mountPath": "/opt/scanflow/code", "readOnly": True} in guard_container[
        "volumeMounts"
    ]
    planner = deployments["rel-scanflow-agents-planner"]
    (planner_container,) = planner["spec"]["template"]["spec"]["containers"]
    assert planner_container["image"] == "registry.example.com/ml/scanflow-agents:0.1.0"


def _planner_platform(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (configmap,) = [
        d for d in _kind(documents, "ConfigMap") if d["metadata"]["name"].endswith("-settings")
    ]
    platform: dict[str, Any] = yaml.safe_load(configmap["data"]["settings.yaml"])["agents"][
        "planner"
    ]["kubernetes"]
    return platform


def test_agents_run_the_agent_image_and_the_planners_workloads_the_serving_one(
    render: Render,
) -> None:
    documents = render(VALUE_SETS["application"])
    platform = _planner_platform(documents)
    agent, serving = (
        "ghcr.io/scanflow-agents/scanflow-agents",
        "ghcr.io/scanflow-agents/scanflow-agents-serving",
    )
    assert platform["agent_image"] == f"{agent}:0.1.0"
    for setting in ("serving_image", "executor_image", "base_image"):
        assert platform[setting] == f"{serving}:0.1.0", setting
    images = {c["image"] for spec in _pod_specs(documents) for c in spec["containers"]}
    assert images == {f"{agent}:0.1.0"}


def test_every_image_can_be_pinned_by_digest(render: Render) -> None:
    digests = {name: "sha256:" + hex(i)[2:] * 64 for i, name in enumerate(
        ["image", "serving", "executor", "base"], start=10
    )}  # fmt: skip
    options = ["--set", f"image.digest={digests['image']}"]
    for name in ("serving", "executor", "base"):
        options += ["--set", f"kubernetes.images.{name}.digest={digests[name]}"]
    # A tag beside a digest is not used: the digest names the content.
    options += ["--set", "image.tag=latest"]
    documents = render(VALUE_SETS["application"], *options)
    platform = _planner_platform(documents)
    agent = f"ghcr.io/scanflow-agents/scanflow-agents@{digests['image']}"
    assert platform["agent_image"] == agent
    for name in ("serving", "executor", "base"):
        assert platform[f"{name}_image"].endswith(f"-serving@{digests[name]}"), name
    images = {c["image"] for spec in _pod_specs(documents) for c in spec["containers"]}
    assert images == {agent}


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        ("image.digest=sha256:abc", "digest"),
        ("kubernetes.images.serving.digest=latest", "digest"),
        ("kubernetes.images.base.repository=", "repository"),
        ("agents.tracker.reference=scanflow_agents.builtin.tracker", "reference"),
        ("agents.tracker.replicas=0", "replicas"),
        ("agents.Bad_Name.enabled=true", "Bad_Name"),
        ("nats.url=http://nats:4222", "url"),
        ("nats.replicas=0", "replicas"),
        ("nats.password=hunter2", "password"),
        ("settings.nats.password=hunter2", "settings"),
        ("securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
        ("agentDefaults.resources.limits.memory=null", "memory"),
        ("natsAuthorization.enabled=true", "existingSecret"),
        ("agents.tracker.strategy=Blue", "strategy"),
        ("kubernetes.buildNamespace=Builds", "buildNamespace"),
        ("securityContext.capabilities.add={NET_ADMIN}", "add"),
        ("securityContext.capabilities.drop={NET_RAW}", "drop"),
        ("podSecurityContext.seccompProfile.type=Unconfined", "seccompProfile"),
        ("securityContext.seccompProfile.type=Unconfined", "seccompProfile"),
        ("probes.liveness.timeoutSeconds=0", "timeoutSeconds"),
        ("kubernetes.podSecurity=lax", "podSecurity"),
    ],
)
def test_the_schema_refuses_bad_values(helm: str, option: str, complaint: str) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "--set", option)
    assert done.returncode != 0, f"{option} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr
    assert complaint in done.stderr, done.stderr


def test_helm_test_runs_the_planners_preflight_as_the_planner(
    documents: list[dict[str, Any]],
) -> None:
    (planner,) = [
        d for d in _kind(documents, "Deployment") if d["metadata"]["name"].endswith("-planner")
    ]
    (pod,) = [p for p in _kind(documents, "Pod") if p["metadata"]["name"].endswith("-preflight")]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == planner["spec"]["template"]["spec"]["serviceAccountName"]
    assert spec["containers"][0]["command"] == ["scanflow", "--settings", SETTINGS_FILE, "check"]


def test_two_releases_sharing_a_team_namespace_keep_their_own_roles(render: Render) -> None:
    # Same release name, two release namespaces (the later --namespace wins).
    def names(*options: str) -> set[tuple[str, str, str]]:
        return {
            (d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])
            for d in render(VALUE_SETS["application"], *options)
            if d["kind"] in ("Role", "RoleBinding")
        }

    first, second = names(), names("--namespace", "other")
    assert first
    assert len(second) == len(first)
    assert not first & second


def test_roles_are_never_granted_to_the_default_account(helm: str, render: Render) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "--set", "serviceAccount.create=false")
    assert done.returncode != 0
    assert "serviceAccount.name: with serviceAccount.create=false, name the existing" in done.stderr
    named = render(None, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ml")
    for binding in _kind(named, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "ml", "namespace": "agents"}
        ]
    assert not _kind(named, "ServiceAccount")


def test_a_recreated_agent_cannot_have_replicas(helm: str) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "--set", "agents.planner.replicas=2")
    assert done.returncode != 0
    assert (
        "agents.planner: strategy Recreate runs one process at a time: replicas must be 1, not 2"
        in done.stderr
    )


def test_notes_name_the_enabled_agents_and_how_to_check_them(helm: str) -> None:
    values = VALUE_SETS["user-agent"]
    args = ("install", "rel", str(CHART), "--dry-run=client", "-f", str(values))
    done = run_helm(helm, *args)
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "- fraud-watch: fraud.agents:FraudWatch" in notes
    assert "- spend-guard: spend_guard:SpendGuard" in notes
    assert "tracker" not in notes  # disabled
    assert "helm test rel" in notes
    assert "exec deploy/rel-scanflow-agents-fraud-watch" in notes
    assert "  - ml-fraud\n  - ml-vision\n" in notes
    # What the planner's pods name in the team namespaces, which the chart cannot copy.
    assert "Secrets: registry-pull, scanflow-nats-users" in notes


def test_each_agent_its_own_nats_user_under_authorization(render: Render) -> None:
    documents = render(VALUE_SETS["user-agent"])
    users = [
        (d["metadata"]["labels"]["scanflow.io/agent"], d["spec"]["template"]["spec"])
        for d in _kind(documents, "Deployment")
    ]
    users += [
        ("console", pod["spec"])
        for pod in _kind(documents, "Pod")
        if pod["metadata"]["name"].endswith("-test")  # the bus test pod; not the preflight's
    ]
    assert len(users) == 4
    for user, spec in users:
        (container,) = spec["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert env["SCANFLOW_NATS__USER"] == {"name": "SCANFLOW_NATS__USER", "value": user}
        assert env["SCANFLOW_NATS__PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "scanflow-nats-users", "key": user}
        }
        assert env["SCANFLOW_NATS__INBOX_PREFIX"]["value"] == f"_INBOX.{user}"
