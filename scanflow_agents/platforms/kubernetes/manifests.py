"""Objects for online workflows and agents, built by pure functions.

A Deployment's pod template is rendered from the node (or agent) definition
and the platform settings alone, and its hash goes into an annotation: a
second deploy of the same definition renders the same template, finds the
same hash, and changes nothing. The definition itself is kept in an
annotation too, so a redeploy re-renders the template with another model
instead of editing a live object field by field.
"""

from __future__ import annotations

import json
from typing import Any

from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.client import DEPLOYMENTS, SERVICES, Obj
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.workflows import AgentSpec, Resources, ServiceNode

SERVING_CONTAINER = "model"
AGENT_CONTAINER = "agent"


def service_name(workflow: str, node: str) -> str:
    """The name of a service node's Deployment and Service."""
    return naming.object_name(workflow, node)


def service_labels(workflow: str) -> dict[str, str]:
    """The labels every service of ``workflow`` carries (to find them all)."""
    return {
        naming.MANAGED_BY: naming.MANAGER,
        naming.WORKFLOW: workflow,
        naming.COMPONENT: "service",
    }


def agent_name(application: str, agent: str) -> str:
    """The name of an agent's Deployment."""
    return naming.object_name(application, "agent", agent)


def env_list(values: dict[str, str | None]) -> list[Obj]:
    """Container environment entries, skipping unset values."""
    return [{"name": k, "value": v} for k, v in values.items() if v is not None]


def resources(spec: Resources, default: Resources | None = None) -> Obj:
    """Requests as declared (else ``default``'s); a memory limit equal to a declared
    memory request, no CPU limit.

    A CPU limit is enforced by CFS quota: a pod that uses its quota early in
    a 100 ms period is stopped for the rest of it, which shows up as latency
    spikes in a model server even on an idle node. The CPU request already
    buys the pod its share under contention, so no limit is set. Memory is
    not compressible: its limit equals its request, so a pod is never killed
    for using what it was promised, nor allowed to take a neighbour's. A
    default request sets no limit: it only gets the pod scheduled under a
    ResourceQuota (which refuses pods without requests), not a size to be
    killed at.
    """
    default = default or Resources()
    requests = {
        key: value
        for key, value in (
            ("cpu", spec.cpu or default.cpu),
            ("memory", spec.memory or default.memory),
        )
        if value is not None
    }
    if not requests:
        return {}
    found: Obj = {"requests": requests}
    if spec.memory is not None:
        found["limits"] = {"memory": spec.memory}
    return found


TMP_VOLUME = "tmp"


def container_security(settings: KubernetesPlatformSettings) -> Obj:
    """The container part of the Pod Security "restricted" level, and a read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": settings.read_only_root,
        "runAsNonRoot": True,
    }


def pod_security(settings: KubernetesPlatformSettings) -> Obj:
    """The pod part of the "restricted" level: a numeric non-root user, the runtime's seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "fsGroup": settings.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def common_env(settings: KubernetesPlatformSettings) -> dict[str, str | None]:
    """What every container is told: where MLflow and NATS are, and the bus namespace.

    The bus namespace is the agents' one, not the team's: the agents read
    their subjects, whatever Kubernetes namespace the pod runs in.
    """
    return {
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.registry_uri,
        "SCANFLOW_NAMESPACE": settings.bus_namespace,
        "SCANFLOW_NATS__URL": settings.nats_url,
        "SCANFLOW_MLFLOW__TRACKING_URI": settings.tracking_uri,
    }


def harden(settings: KubernetesPlatformSettings, container: Obj) -> Obj:
    """Give a container the restricted security context, the secrets and a writable /tmp."""
    if settings.pod_env:
        container.setdefault("env", []).extend(item.entry() for item in settings.pod_env)
    if settings.env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.env_secret}}]
    container["securityContext"] = container_security(settings)
    mounts = container.setdefault("volumeMounts", [])
    mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
    return container


def pod_spec(settings: KubernetesPlatformSettings, container: Obj, *, token: bool = False) -> Obj:
    """A restricted pod spec around one container, with the settings' secrets.

    No service-account token is mounted unless ``token``: model servers and
    steps do not call the Kubernetes API, and a token in a pod is a
    credential for whoever gets code to run there.
    """
    spec: Obj = {
        "automountServiceAccountToken": token,
        "securityContext": pod_security(settings),
        "containers": [harden(settings, container)],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}],
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    return spec


def serving_template(
    settings: KubernetesPlatformSettings,
    workflow: str,
    node: ServiceNode,
    pod_labels: dict[str, str],
) -> Obj:
    """The pod template of a service node: the built-in model server on one port."""
    port = settings.serving_port
    config = ServingConfig(
        model_uri=node.model_uri,
        host="0.0.0.0",
        port=port,
        # Listen at once and answer /health with 503 while the model loads:
        # the readiness probe then keeps traffic away until it is ready.
        load_before_listen=False,
        tracking_uri=settings.tracking_uri,
        # A thousand replicas logging their own numbers would flood MLflow.
        report_tracking_uri=settings.tracking_uri if settings.replica_reports else None,
        registry_uri=settings.registry_uri,
        nats_url=settings.nats_url,
        namespace=settings.bus_namespace,
        workflow=workflow,
        node=node.name,
        replica="$(POD_NAME)",  # expanded by the kubelet
        latency_p95_ms=node.latency_p95_ms,
    )
    # Probes answer from memory, but a loaded pod's event loop may be busy
    # predicting: a 1 s timeout would restart healthy pods under load.
    probe = {
        "httpGet": {"path": "/health", "port": "http"},
        "timeoutSeconds": max(1, round(settings.probe_timeout)),
    }
    env = env_list(
        {
            **common_env(settings),
            "SCANFLOW_WORKFLOW": workflow,
            "SCANFLOW_NODE": node.name,
            "SCANFLOW_MODEL_URI": node.model_uri,
        }
    )
    env.insert(0, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    env += env_list(dict(node.env))
    container: Obj = {
        "name": SERVING_CONTAINER,
        "image": node.image or settings.serving_image,
        "command": ["python", "-m", "scanflow_agents.serving"],
        "args": config.to_args(),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": resources(node.resources, settings.default_resources),
        # Loading a model may take minutes: the startup probe allows for it,
        # so the liveness probe can be strict once the server is up.
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 120},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
    }
    spec = pod_spec(settings, container)
    if settings.serving_tmp_size:
        for volume in spec["volumes"]:
            if volume["name"] == TMP_VOLUME:
                volume["emptyDir"] = {"sizeLimit": settings.serving_tmp_size}
    return {
        "metadata": {"labels": pod_labels, "annotations": {naming.MODEL_URI: node.model_uri}},
        "spec": spec,
    }


def service_deployment(
    settings: KubernetesPlatformSettings,
    team: str,
    workflow: str,
    node: ServiceNode,
    application: str | None = None,
) -> Obj:
    """The Deployment of a service node (its replicas, template and fingerprints)."""
    object_labels = naming.labels(
        team, application=application, workflow=workflow, node=node.name, component="service"
    )
    template = serving_template(settings, workflow, node, object_labels)
    return _deployment(
        settings.namespace(team),
        service_name(workflow, node.name),
        object_labels,
        template,
        node.replicas,
        {
            naming.SPEC: node.model_dump_json(),
            naming.MODEL_URI: node.model_uri,
        },
        settings.rollout_deadline,
    )


def service(
    settings: KubernetesPlatformSettings,
    team: str,
    workflow: str,
    node: ServiceNode,
    application: str | None = None,
) -> Obj:
    """The Service in front of a service node's replicas (port 80 → the server's port)."""
    object_labels = naming.labels(
        team, application=application, workflow=workflow, node=node.name, component="service"
    )
    spec: Obj = {
        "selector": naming.identity(object_labels),
        "ports": [
            {
                "name": "http",
                "port": node.port or 80,
                "targetPort": "http",
                "protocol": "TCP",
            }
        ],
    }
    return {
        "apiVersion": SERVICES.api_version,
        "kind": SERVICES.kind,
        "metadata": {
            "name": service_name(workflow, node.name),
            "namespace": settings.namespace(team),
            "labels": object_labels,
            "annotations": {naming.SPEC_HASH: naming.digest(spec)},
        },
        "spec": spec,
    }


def agent_reference(agent: AgentSpec) -> str:
    """What ``scanflow run`` is given: ``module:Class`` (a built-in name becomes its class)."""
    if ":" in agent.agent or "." in agent.agent or agent.agent.endswith(".py"):
        return agent.agent
    return f"scanflow_agents.builtin.{agent.agent}:{agent.agent.capitalize()}"


def agent_deployment(
    settings: KubernetesPlatformSettings,
    team: str,
    application: str,
    agent: AgentSpec,
    image: str | None = None,
) -> Obj:
    """The Deployment of one agent: ``scanflow run <reference> --name <name>``, settings as env.

    The agent runs under its name in the application (not its class's), which
    is also where its configuration is: ``SCANFLOW_AGENTS__<NAME>``.
    """
    object_labels = naming.labels(
        team, application=application, agent=agent.name, component="agent"
    )
    values: dict[str, str | None] = common_env(settings)
    if agent.config:
        # The settings tree reads an agent's section from SCANFLOW_AGENTS__<NAME> as JSON.
        key = f"SCANFLOW_AGENTS__{agent.name.upper().replace('-', '_')}"
        values[key] = json.dumps(agent.config, sort_keys=True)
    port = settings.agent_http_port
    reference = agent_reference(agent)
    container: Obj = {
        "name": AGENT_CONTAINER,
        "image": image or settings.agent_image,
        "command": ["scanflow", "run", reference, "--name", agent.name, "--http-port", str(port)],
        "env": env_list(values),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": dict(AGENT_RESOURCES),
        **agent_probes(settings),
    }
    # Only an agent given a service account (its RBAC) gets that account's token.
    spec = pod_spec(settings, container, token=settings.agent_service_account is not None)
    if settings.agent_service_account:
        spec["serviceAccountName"] = settings.agent_service_account
    template = {"metadata": {"labels": object_labels}, "spec": spec}
    return _deployment(
        settings.namespace(team),
        agent_name(application, agent.name),
        object_labels,
        template,
        1,
        {naming.SPEC: agent.model_dump_json()},
        settings.rollout_deadline,
        strategy=agent_strategy(reference),
    )


#: An agent's requests and memory limit (no CPU limit: throttling slows its
#: loops, and a limit equal to requests would throttle at once), as in the chart.
AGENT_RESOURCES: Obj = {
    "requests": {"cpu": "50m", "memory": "256Mi"},
    "limits": {"memory": "768Mi"},
}

#: The one process at a time an agent may run as (see :func:`agent_strategy`).
SINGLE_PROCESS_AGENTS = frozenset({"scanflow_agents.builtin.planner:Planner"})


def agent_probes(settings: KubernetesPlatformSettings) -> Obj:
    """The probes of an agent pod, on ``scanflow run``'s HTTP server (as the chart's).

    ``/livez``: the process and its loops are alive; ``/readyz``: connected to
    NATS, every agent started and subscribed, not draining. The startup probe
    gives a slow start (imports, first connection) a minute before liveness counts.
    """
    timeout = max(1, round(settings.probe_timeout))

    def probe(path: str, period: int, failures: int) -> Obj:
        return {
            "httpGet": {"path": path, "port": "http"},
            "timeoutSeconds": timeout,
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe("/livez", 2, 60),
        "readinessProbe": probe("/readyz", 5, 2),
        "livenessProbe": probe("/livez", 10, 3),
    }


def agent_strategy(reference: str) -> Obj:
    """How an agent's Deployment replaces its pods.

    Agents elect a leader through a lease (``_core/leading.py``): a new pod
    may start beside the old one, answers calls as soon as it is ready, and
    runs sensors and rules only once the old pod has released the lease on
    SIGTERM. A rolling update (one extra pod, none unavailable) then leaves
    no moment without an agent answering. The planner is the exception: it
    follows runs and resumes the unreported ones at start whether it leads
    or not, and its run store has one writer, so the old planner must be
    gone before the new one starts (``Recreate``).
    """
    if reference in SINGLE_PROCESS_AGENTS:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def template_hash(template: Obj) -> str:
    """The fingerprint of a pod template, without the restart stamp."""
    meta = dict(template.get("metadata") or {})
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k != naming.RESTARTED_AT}
    return naming.digest({**template, "metadata": {**meta, "annotations": notes}})


def _deployment(
    namespace: str,
    name: str,
    object_labels: dict[str, str],
    template: Obj,
    replicas: int,
    annotations: dict[str, Any],
    progress_deadline: float = 600.0,
    *,
    strategy: Obj | None = None,
) -> Obj:
    return {
        "apiVersion": DEPLOYMENTS.api_version,
        "kind": DEPLOYMENTS.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": object_labels,
            "annotations": {naming.SPEC_HASH: template_hash(template), **annotations},
        },
        "spec": {
            "replicas": replicas,
            # The controller marks a rollout failed (Progressing=False,
            # ProgressDeadlineExceeded) after this; redeploy then rolls back.
            "progressDeadlineSeconds": max(1, round(progress_deadline)),
            # The selector is immutable: identity labels only, never the model.
            "selector": {"matchLabels": naming.identity(object_labels)},
            "strategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": template,
        },
    }
