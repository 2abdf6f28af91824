"""What the platform asks of the Kubernetes API: the one list its Role is made from.

Every request :class:`~scanflow_agents.platforms.kubernetes.client.KubeClient`
sends on the platform's behalf is one of these rules, read from the calls in
``platform``, ``deploying``, ``rollouts``, ``running``, ``pods``,
``building`` and ``checking`` (the preflight; its namespace check is a
server-side dry run of a Service create, and its access reviews need no
grant). The Helm chart grants exactly these (its test renders the Role and
compares it with this module), and the platform's emulator tests check
that every request the platform sends is covered, so code and Role cannot
drift apart.

Scopes:

- ``team``: each supervised team namespace (``namespace_prefix + team``).
- ``argo``: the same namespaces, only where Argo Workflows may be used
  (``argo`` not ``never``).
- ``builds``: the build namespace (``build_namespace``, default
  ``scanflow-builds``), only where images are built on the cluster.

Not in the list, on purpose: namespaces (``create_namespaces`` needs a
cluster-wide grant of ``namespaces`` get/create, which the chart never gives:
it leaves ``create_namespaces`` off), and the discovery of ``/apis/argoproj.io``
(``argo: auto``), a non-resource URL every authenticated user may read through
the cluster's default ``system:discovery`` role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["team", "argo", "builds"]

#: The RBAC verb of an API request, from its HTTP method and whether it names
#: one object (``GET`` of a collection is ``list``; of one object, ``get``).
VERBS = {
    ("GET", True): "get",
    ("GET", False): "list",
    ("POST", False): "create",
    ("PATCH", True): "patch",
    ("PUT", True): "update",
    ("DELETE", True): "delete",
    ("DELETE", False): "deletecollection",
}


@dataclass(frozen=True)
class Rule:
    """Verbs on one resource (``deployments/scale`` for a subresource) of one API group."""

    scope: Scope
    group: str
    resource: str
    verbs: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    # deploy/ensure: get, create, json-patch; stale services and delete: list, delete;
    # rollouts: get while waiting, patch to roll and to roll back.
    Rule("team", "apps", "deployments", ("get", "list", "create", "patch", "delete")),
    # scale: a merge patch of the scale subresource.
    Rule("team", "apps", "deployments/scale", ("patch",)),
    # A Service beside each model Deployment.
    Rule("team", "", "services", ("get", "list", "create", "patch", "delete")),
    # status (pod readiness) and Pending-step detection: a labelled list, never one pod.
    Rule("team", "", "pods", ("list",)),
    # Pending-step detection: the FailedCreate events of a Job that made no pod.
    Rule("team", "", "events", ("list",)),
    # Batch steps: create, follow (list), adopt after a retried create (get), cancel (delete).
    Rule("team", "batch", "jobs", ("get", "list", "create", "delete")),
    # Argo runs: create, follow (get), stop a stuck one (patch shutdown), delete.
    Rule("argo", "argoproj.io", "workflows", ("get", "list", "create", "patch", "delete")),
    # Preflight: the account Argo's wait container reports through exists.
    Rule("argo", "", "serviceaccounts", ("get",)),
    # Image builds: one Job and its context ConfigMap per image, in the build namespace.
    Rule("builds", "batch", "jobs", ("get", "create", "delete")),
    Rule("builds", "", "configmaps", ("get", "create", "delete")),
    # A build whose pod will not start (refused by Pod Security, an image it cannot pull).
    Rule("builds", "", "pods", ("list",)),
    Rule("builds", "", "events", ("list",)),
)


def rules(scope: Scope) -> list[Rule]:
    """The rules of one scope, in the order above."""
    return [rule for rule in RULES if rule.scope == scope]


def verb(method: str, names_object: bool) -> str:
    """The RBAC verb of a request (``GET`` one object: ``get``; the collection: ``list``).

    Raises:
        ValueError: for a method the platform never sends.
    """
    try:
        return VERBS[method.upper(), names_object]
    except KeyError:
        raise ValueError(f"no RBAC verb for {method} (names an object: {names_object})") from None


def allows(scope: Scope, group: str, resource: str, action: str) -> bool:
    """Whether ``RULES`` grant ``action`` on ``group``/``resource`` in a ``scope`` namespace."""
    return any(
        rule.group == group and rule.resource == resource and action in rule.verbs
        for rule in rules(scope)
    )
