"""The preflight: what the platform needs on the cluster, checked before it acts.

For every namespace it manages (each team's, and the build namespace when
images are built on the cluster) the platform asks the API server whether the
namespace exists and, with one SelfSubjectAccessReview per verb, whether its
identity holds every rule of :mod:`.permissions`; with Argo on, whether the
account Argo's wait container reports through exists. Each gap is a
:class:`Problem` naming what is missing and the command that fixes it, so a
planner on a half-installed cluster says so at start instead of failing on
its first deploy.

Not checked: the build namespace's Pod Security level (reading a namespace's
labels needs a cluster-wide grant, which the chart never gives).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from scanflow_agents.platforms.kubernetes import permissions
from scanflow_agents.platforms.kubernetes.client import (
    CONFIGMAPS,
    SERVICE_ACCOUNTS,
    SERVICES,
    ApiError,
    KubeClient,
)
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings


@dataclass(frozen=True)
class Problem:
    """One thing the platform needs and does not have, and how to give it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}; fix: {self.fix}"


async def preflight(client: KubeClient, settings: KubernetesPlatformSettings) -> list[Problem]:
    """Every problem found in the namespaces ``settings`` manage (empty: all is there)."""
    argo = settings.argo != "never"
    team_scopes: tuple[permissions.Scope, ...] = ("team", "argo") if argo else ("team",)
    checks = [
        _namespace(client, settings.namespace(team), team_scopes)
        for team in settings.teams or (settings.team,)
    ]
    if settings.registry:
        checks.append(_namespace(client, settings.builds_namespace(), ("builds",)))
    found = [problem for problems in await asyncio.gather(*checks) for problem in problems]
    if argo:
        for team in settings.teams or (settings.team,):
            found += await _executor_account(client, settings, settings.namespace(team))
    return found


async def _namespace(
    client: KubeClient, namespace: str, scopes: tuple[permissions.Scope, ...]
) -> list[Problem]:
    # A dry run of a create the namespace's Role allows: Services in a team's,
    # ConfigMaps (build contexts) in the build namespace.
    probe = CONFIGMAPS if "builds" in scopes else SERVICES
    if await client.namespace_exists(namespace, probe) is False:
        # Nothing else can be there: the one fix comes first.
        return [
            Problem(
                f"namespace {namespace} does not exist",
                f"kubectl create namespace {namespace} (the chart makes it with "
                "kubernetes.createNamespaces=true)",
            )
        ]
    wanted = [
        (rule, verb) for scope in scopes for rule in permissions.rules(scope) for verb in rule.verbs
    ]
    answers = await asyncio.gather(
        *(client.allowed(namespace, rule.group, rule.resource, verb) for rule, verb in wanted)
    )
    missing = [
        f"{verb} {rule.resource}" + (f" ({rule.group})" if rule.group else "")
        for (rule, verb), allowed in zip(wanted, answers, strict=True)
        if not allowed
    ]
    if not missing:
        return []
    return [
        Problem(
            f"the planner may not {', '.join(missing)} in namespace {namespace}",
            f"grant its Role there: helm upgrade the chart with rbac.create=true and "
            f"{namespace} among its namespaces (kubernetes.teams, or kubernetes.buildNamespace); "
            f"check with: kubectl auth can-i --list -n {namespace} --as <the planner's account>",
        )
    ]


async def _executor_account(
    client: KubeClient, settings: KubernetesPlatformSettings, namespace: str
) -> list[Problem]:
    account = settings.argo_executor_service_account
    try:
        if await client.get(SERVICE_ACCOUNTS, namespace, account) is not None:
            return []
    except ApiError as exc:
        if exc.status == 403:  # Not allowed to look: the access reviews name that grant.
            return []
        raise
    return [
        Problem(
            f"service account {account} (Argo's executor) does not exist in namespace {namespace}",
            f"kubectl -n {namespace} create serviceaccount {account}, with a Role to create "
            "and patch workflowtaskresults (the chart makes both when kubernetes.argo is "
            "not never)",
        )
    ]
