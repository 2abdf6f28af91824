"""Bringing Deployments and Services to a rendered state, touching only our own.

A workflow's services and an application's agents are deployed here
(``deploy_services``, ``deploy_agents``); ``ensure`` brings one object to
its rendered state.

Creation is a POST; a change is one JSON patch whose first operation tests
the ``managed-by`` label, so even an object replaced by someone else between
our read and our write is not overwritten. The pod template is replaced as a
whole (not merged) so that what was removed from a definition (an env
variable, a limit) is removed from the cluster too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel, Field

from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.building import (
    agent_context,
    needs_agent_build,
    needs_build,
    node_image,
)
from scanflow_agents.platforms.kubernetes.client import (
    ARGO_WORKFLOWS,
    DEPLOYMENTS,
    JOBS,
    SERVICES,
    ApiError,
    KubeClient,
    Obj,
    Resource,
)
from scanflow_agents.platforms.kubernetes.manifests import (
    agent_deployment,
    service,
    service_deployment,
    service_labels,
)
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
from scanflow_agents.platforms.results import (
    ActionResult,
    DeployResult,
    Outcome,
    PlatformError,
    action_result,
)
from scanflow_agents.workflows import Application, Workflow

logger = logging.getLogger(__name__)


class ApplicationDeployResult(BaseModel):
    """The result of deploying an application: its online workflows and its agents."""

    application: str
    namespace: str
    outcome: Outcome
    workflows: list[DeployResult] = Field(default_factory=list)
    agents: list[ActionResult] = Field(default_factory=list)


def pointer(*keys: str) -> str:
    """A JSON pointer (RFC 6901) to ``keys``."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


def ownership_test() -> Obj:
    """The JSON-patch operation that fails unless the object is ours."""
    return {
        "op": "test",
        "path": pointer("metadata", "labels", naming.MANAGED_BY),
        "value": naming.MANAGER,
    }


async def owned(
    client: KubeClient,
    resource: Resource,
    namespace: str,
    name: str,
    wanted: dict[str, str],
    what: str,
) -> Obj:
    """The object ``name`` if it is the one ``wanted`` describes.

    Raises:
        PlatformError: ``not_found`` if there is none; ``failed``, naming it,
            if an object of that name is not ours (or is another of ours).
    """
    current = await client.get(resource, namespace, name)
    if current is None:
        raise PlatformError("not_found", f"no {what} in namespace {namespace!r}")
    if not naming.matches(current, wanted):
        raise PlatformError(
            "failed",
            f"{naming.describe(current)} is not the {what} this platform manages "
            f"(labels {(current.get('metadata') or {}).get('labels') or {}}); left alone",
        )
    return current


async def ensure(
    client: KubeClient, resource: Resource, desired: Obj
) -> tuple[Outcome, dict[str, Any]]:
    """Create ``desired`` or patch the live object to it; never touch a foreign one.

    Deployments compare their template hash and replicas; Services their spec
    hash (the API server fills in fields of a Service spec, e.g. its cluster
    IP, that must not be overwritten).

    Returns:
        The outcome and what changed (``replicas: [before, after]``,
        ``template: true``).
    """
    meta = desired["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    existing = await client.get(resource, namespace, name)
    if existing is None:
        await client.create(resource, namespace, desired)
        return "created", {}
    if not naming.matches(existing, naming.identity(meta["labels"])):
        raise PlatformError(
            "failed",
            f"{naming.describe(existing)} exists and was not made by this platform for "
            f"{_whose(meta['labels'])}; left alone (rename the node or remove that object)",
        )
    ops: list[Obj] = []
    changes: dict[str, Any] = {}
    notes = naming.annotations_of(existing)
    if notes.get(naming.SPEC_HASH) != meta["annotations"][naming.SPEC_HASH]:
        part = "template" if resource.kind == "Deployment" else None
        if part:
            ops.append(
                {"op": "replace", "path": pointer("spec", part), "value": desired["spec"][part]}
            )
        else:
            for key in ("selector", "ports"):
                ops.append(
                    {"op": "add", "path": pointer("spec", key), "value": desired["spec"][key]}
                )
        changes["template" if part else "spec"] = True
    if resource.kind == "Deployment":
        before = (existing.get("spec") or {}).get("replicas")
        after = desired["spec"]["replicas"]
        if before != after:
            ops.append({"op": "add", "path": pointer("spec", "replicas"), "value": after})
            changes["replicas"] = [before, after]
    if not ops:
        return "unchanged", {}
    if "annotations" not in (existing.get("metadata") or {}):
        ops.append({"op": "add", "path": pointer("metadata", "annotations"), "value": {}})
    for key, value in meta["annotations"].items():
        ops.append({"op": "add", "path": pointer("metadata", "annotations", key), "value": value})
    await client.patch(resource, namespace, name, [ownership_test(), *ops], kind="json")
    return "updated", changes


async def deploy_services(
    client: KubeClient,
    settings: KubernetesPlatformSettings,
    team: str,
    workflow: Workflow,
    application: str | None = None,
) -> list[ActionResult]:
    """A Deployment and a Service per service node; services no longer declared are deleted.

    A node that needs an image of its own runs the one a build made for it.
    """
    namespace = settings.namespace(team)
    results: list[ActionResult] = []
    for node in workflow.services:
        if node.image is None and needs_build(node):
            node = node.model_copy(update={"image": node_image(settings, workflow, node)})
        deployment = service_deployment(settings, team, workflow.name, node, application)
        done, changes = await ensure(client, DEPLOYMENTS, deployment)
        svc_done, _ = await ensure(
            client, SERVICES, service(settings, team, workflow.name, node, application)
        )
        outcome: Outcome = (
            done if done != "unchanged" else ("updated" if svc_done != "unchanged" else done)
        )
        where = f"{namespace}/{deployment['metadata']['name']}"
        messages = {
            "created": f"created Deployment and Service {where} "
            f"with {node.replicas} replica(s) of {node.model_uri}",
            "unchanged": f"already {node.replicas} replica(s) of {node.model_uri}",
        }
        patched = f"patched {where}: {', '.join(sorted(changes)) or 'service'}"
        message = messages.get(outcome, patched)
        results.append(
            action_result("deploy", workflow.name, node.name, outcome, message, **changes)
        )
    keep = {node.name for node in workflow.services}
    for stale in await client.find(DEPLOYMENTS, namespace, service_labels(workflow.name)):
        node_name = stale["metadata"]["labels"].get(naming.NODE)
        if node_name not in keep:
            await client.delete(DEPLOYMENTS, namespace, stale["metadata"]["name"])
            await client.delete(SERVICES, namespace, stale["metadata"]["name"])
            results.append(
                action_result(
                    "deploy", workflow.name, node_name, "deleted", "node no longer in the workflow"
                )
            )
    return results


async def deploy_agents(
    client: KubeClient, settings: KubernetesPlatformSettings, application: Application
) -> list[ActionResult]:
    """A Deployment per agent of ``application``; agents no longer declared are deleted.

    An agent that names a file runs the image a build made for it (when a
    registry is set); the others run the settings' agent image.
    """
    team, namespace = application.team, settings.namespace(application.team)
    results: list[ActionResult] = []
    for agent in application.agents:
        image = None
        if needs_agent_build(agent) and settings.registry is None:
            # The agent image has the framework, not this file: the pod would crash-loop.
            raise PlatformError(
                "invalid",
                f"agent {agent.name!r} of application {application.name!r} is the file "
                f"{agent.agent!r}, which is in no image: set a registry so that build makes "
                "an image carrying it, or name a module installed in the agent image",
            )
        if needs_agent_build(agent) and settings.registry is not None:
            context = await asyncio.to_thread(agent_context, settings, application.name, agent)
            image = context.image(settings.registry)
        body = agent_deployment(settings, team, application.name, agent, image=image)
        done, changes = await ensure(client, DEPLOYMENTS, body)
        message = f"agent {agent.name!r} ({agent.agent}) in {namespace}: {done}"
        results.append(
            action_result(
                "deploy", application.name, agent.name, done, message, kind="agent", **changes
            )
        )
    keep = {agent.name for agent in application.agents}
    wanted = {
        naming.MANAGED_BY: naming.MANAGER,
        naming.APPLICATION: application.name,
        naming.COMPONENT: "agent",
    }
    for stale in await client.find(DEPLOYMENTS, namespace, wanted):
        name = stale["metadata"]["labels"].get(naming.AGENT)
        if name not in keep:
            await client.delete(DEPLOYMENTS, namespace, stale["metadata"]["name"])
            results.append(
                action_result(
                    "deploy", application.name, name, "deleted", "agent no longer declared"
                )
            )
    return results


async def delete_workflow(
    client: KubeClient, settings: KubernetesPlatformSettings, namespace: str, workflow: str
) -> dict[str, int]:
    """Delete every object of ``workflow`` this platform made in ``namespace``.

    Argo Workflows are looked for only when Argo may be in use (``argo`` is
    not ``never``), and a 403 on them (RBAC without Argo) is logged, not
    fatal: a cluster with the CRD installed but Argo not granted has none of ours.

    Returns:
        How many objects went, by resource (``{"jobs": 3}``).
    """
    wanted = {naming.MANAGED_BY: naming.MANAGER, naming.WORKFLOW: workflow}
    deleted: dict[str, int] = {}
    resources: list[Resource] = [JOBS, SERVICES, DEPLOYMENTS]
    if settings.argo != "never":
        resources.insert(0, ARGO_WORKFLOWS)
    skipped: list[str] = []
    for resource in resources:
        try:
            found = await client.find(resource, namespace, wanted)
        except ApiError as exc:
            if exc.status != 403 or resource is not ARGO_WORKFLOWS:
                raise
            logger.warning("delete %s: Argo Workflows not listed: %s", workflow, exc)
            skipped.append(f"{resource.plural} (forbidden)")
            continue
        for obj in found:
            if await client.delete(resource, namespace, obj["metadata"]["name"]):
                deleted[resource.plural] = deleted.get(resource.plural, 0) + 1
    if skipped:
        logger.info("delete %s in %s: skipped %s", workflow, namespace, ", ".join(skipped))
    return deleted


def _whose(object_labels: dict[str, str]) -> str:
    if naming.AGENT in object_labels:
        return f"agent {object_labels[naming.AGENT]!r}"
    node, workflow = object_labels.get(naming.NODE), object_labels.get(naming.WORKFLOW)
    return f"node {node!r} of workflow {workflow!r}"
