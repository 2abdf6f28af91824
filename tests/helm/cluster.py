"""One cluster, as the API server and the kubelet would see it: what refers to what.

A cluster here is a list of objects: what the chart renders, what the planner
makes from the settings the chart gives it, and what the documented install
creates before ``helm install`` (namespaces, Secrets, the NATS and MLflow
Services). :func:`faults` lists every reference that would not hold on a real
cluster: a pod naming a Secret, ConfigMap or service account that is not in its
namespace, a URL whose Service is not where its name points, an object in a
namespace nobody creates, a model server reporting where no agent reads.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.serving.reporting import subject as report_subject
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import subject_matches

Obj = dict[str, Any]

#: Every namespace has this account, made by the API server.
DEFAULT_ACCOUNT = "default"
#: The topic the tracker's serving sensor reads (agents/tracker/tracker.py).
SERVING_TOPIC = "telemetry.serving.>"
_URL = re.compile(r"^(nats|tls|ws|wss|http|https)://", re.IGNORECASE)
_IN_CLUSTER_SUFFIXES = (".svc.cluster.local", ".svc")


@dataclass
class Cluster:
    """The objects of one cluster, and the bus namespace its agents listen on."""

    objects: list[Obj]
    bus_namespace: str
    #: Namespaces that exist before anything here is applied (the release's,
    #: made by ``helm install --create-namespace``).
    given_namespaces: set[str] = field(default_factory=set)
    #: The NATS credentials (environment variables) the chart's agents connect with:
    #: a model server without them is refused by a NATS with authentication on.
    nats_credentials: set[str] = field(default_factory=set)

    def has(self, kind: str, namespace: str | None, name: str) -> bool:
        return any(
            obj["kind"] == kind
            and obj["metadata"]["name"] == name
            and (namespace is None or obj["metadata"].get("namespace") == namespace)
            for obj in self.objects
        )

    @property
    def namespaces(self) -> set[str]:
        made = {o["metadata"]["name"] for o in self.objects if o["kind"] == "Namespace"}
        return made | self.given_namespaces


def faults(cluster: Cluster) -> list[str]:
    """Every reference in ``cluster`` that a real cluster would not resolve."""
    found: list[str] = []
    for obj in cluster.objects:
        found += _namespace_faults(cluster, obj)
        for where, namespace, pod in pod_specs(obj):
            found += [f"{where}: {fault}" for fault in _pod_faults(cluster, namespace, pod)]
        if obj["kind"] == "ConfigMap" and "settings.yaml" in obj.get("data", {}):
            found += _settings_faults(cluster, obj)
    return list(dict.fromkeys(found))  # one line per fault, however many fields repeat it


def pod_specs(obj: Obj) -> Iterator[tuple[str, str, Obj]]:
    """Each pod spec of ``obj`` (with where it is and its namespace): Deployments, Jobs,
    Pods, and Argo Workflows (as one pod spec per step, with the executor's account)."""
    kind, meta = obj["kind"], obj["metadata"]
    where = f"{kind} {meta.get('namespace')}/{meta['name']}"
    namespace = meta.get("namespace", "")
    if kind in ("Deployment", "Job"):
        yield where, namespace, obj["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield where, namespace, obj["spec"]
    elif kind == "Workflow":
        spec = obj["spec"]
        account = spec.get("executor", {}).get("serviceAccountName")
        for template in spec["templates"]:
            if "container" in template:
                yield (
                    f"{where} step {template['name']}",
                    namespace,
                    {
                        "serviceAccountName": spec.get("serviceAccountName", DEFAULT_ACCOUNT),
                        "imagePullSecrets": spec.get("imagePullSecrets", []),
                        "containers": [template["container"]],
                        "volumes": spec.get("volumes", []),
                    },
                )
        if account:
            yield f"{where} executor", namespace, {"serviceAccountName": account}


def _namespace_faults(cluster: Cluster, obj: Obj) -> list[str]:
    meta = obj["metadata"]
    named = [meta.get("namespace")]
    named += [s.get("namespace") for s in obj.get("subjects", []) if s["kind"] == "ServiceAccount"]
    return [
        f"{obj['kind']} {meta['name']} names namespace {ns!r}, which nothing creates"
        for ns in named
        if ns is not None and ns not in cluster.namespaces
    ] + [
        f"RoleBinding {meta.get('namespace')}/{meta['name']} grants to ServiceAccount "
        f"{s.get('namespace')}/{s['name']}, which does not exist"
        for s in obj.get("subjects", [])
        if obj["kind"] == "RoleBinding"
        if s["kind"] == "ServiceAccount" and not _account_exists(cluster, s["namespace"], s["name"])
    ]


def _account_exists(cluster: Cluster, namespace: str, name: str) -> bool:
    if name == DEFAULT_ACCOUNT:
        return namespace in cluster.namespaces
    return cluster.has("ServiceAccount", namespace, name)


def _pod_faults(cluster: Cluster, namespace: str, pod: Obj) -> list[str]:
    found: list[str] = []
    account = pod.get("serviceAccountName", DEFAULT_ACCOUNT)
    if not _account_exists(cluster, namespace, account):
        found.append(f"service account {account!r} is not in namespace {namespace}")
    wanted: list[tuple[str, str, bool]] = [
        ("Secret", s["name"], False) for s in pod.get("imagePullSecrets", [])
    ]
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            wanted.append(
                ("Secret", volume["secret"]["secretName"], volume["secret"].get("optional", False))
            )
        if "configMap" in volume:
            wanted.append(
                (
                    "ConfigMap",
                    volume["configMap"]["name"],
                    volume["configMap"].get("optional", False),
                )
            )
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for source in container.get("envFrom", []):
            for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if key in source:
                    wanted.append((kind, source[key]["name"], source[key].get("optional", False)))
        for item in container.get("env", []):
            ref = item.get("valueFrom", {})
            for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if key in ref:
                    wanted.append((kind, ref[key]["name"], ref[key].get("optional", False)))
            if "value" in item:
                found += _url_faults(cluster, namespace, f"env {item['name']}", item["value"])
        for arg in container.get("args", []) + container.get("command", []):
            found += _url_faults(cluster, namespace, "argument", str(arg))
        found += _subject_faults(cluster, container)
    for kind, name, optional in wanted:
        if not optional and not cluster.has(kind, namespace, name):
            found.append(f"{kind} {name!r} is not in namespace {namespace}")
    return found


def _settings_faults(cluster: Cluster, config_map: Obj) -> list[str]:
    import yaml

    # The chart's pods read their URLs from here, in the ConfigMap's namespace.
    settings = yaml.safe_load(config_map["data"]["settings.yaml"])
    namespace = config_map["metadata"]["namespace"]
    urls = [
        settings.get("nats", {}).get("url", ""),
        settings.get("mlflow", {}).get("tracking_uri", ""),
    ]
    return [
        f"settings.yaml of {namespace}: {fault}"
        for url in urls
        for fault in _url_faults(cluster, namespace, "url", url)
    ]


def _url_faults(cluster: Cluster, namespace: str, what: str, text: str) -> list[str]:
    found: list[str] = []
    for url in (part.strip() for part in text.split(",")):
        if not _URL.match(url):
            continue
        host = urlsplit(url).hostname or ""
        target = service_of(host, namespace)
        if target is None:
            continue
        service_namespace, service = target
        if not cluster.has("Service", service_namespace, service):
            found.append(
                f"{what} {url} resolves to Service {service_namespace}/{service}, which does not "
                "exist"
            )
    return found


def service_of(host: str, namespace: str) -> tuple[str, str] | None:
    """The (namespace, Service) a pod in ``namespace`` reaches at ``host``, as cluster DNS
    resolves it; ``None`` for an address or a name outside the cluster."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    for suffix in _IN_CLUSTER_SUFFIXES:
        if host.endswith(suffix):
            host = host.removesuffix(suffix)
            break
    else:
        if host.count(".") > 1:
            return None  # an outside name (registry.example.com)
    parts = host.split(".")
    if len(parts) == 1:
        return namespace, parts[0]  # a short name: the pod's own namespace
    return parts[1], parts[0]


def _subject_faults(cluster: Cluster, container: Obj) -> list[str]:
    command = container.get("command", [])
    if command[-2:] != ["-m", "scanflow_agents.serving"]:
        return []
    config = ServingConfig.from_args([str(arg) for arg in container.get("args", [])])
    if not config.nats_url:
        return [f"model server {config.workflow}/{config.node} reports to no NATS"]
    found: list[str] = []
    names = {item["name"] for item in container.get("env", [])}
    if missing := sorted(cluster.nats_credentials - names):
        found.append(
            f"model server {config.workflow}/{config.node} connects to NATS without "
            f"{', '.join(missing)}, which the agents connect with"
        )
    subject = report_subject(config)
    listened = Subjects(cluster.bus_namespace).event(SERVING_TOPIC)
    if not subject_matches(listened, subject):
        found.append(
            f"model server {config.workflow}/{config.node} reports on {subject}; the agents "
            f"read {listened}"
        )
    return found
