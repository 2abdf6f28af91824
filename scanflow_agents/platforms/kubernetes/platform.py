"""The Kubernetes platform: services as Deployments, batch runs as Jobs or Argo."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from scanflow_agents._kit.tasks import guarded, stop
from scanflow_agents.platforms.base import RunCallback
from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.building import (
    ImageBuildResult,
    agent_context,
    build_image,
    needs_agent_build,
    needs_build,
    node_context,
    node_image,
)
from scanflow_agents.platforms.kubernetes.client import (
    ARGO_WORKFLOWS,
    DEPLOYMENTS,
    JOBS,
    PODS,
    SERVICES,
    KubeClient,
    Obj,
)
from scanflow_agents.platforms.kubernetes.deploying import (
    ApplicationDeployResult,
    action_result,
    deploy_agents,
    ensure,
    overall,
    owned,
    ownership_test,
    pointer,
)
from scanflow_agents.platforms.kubernetes.manifests import (
    service,
    service_deployment,
    service_name,
)
from scanflow_agents.platforms.kubernetes.running import BatchRun
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
from scanflow_agents.platforms.kubernetes.statuses import service_status
from scanflow_agents.platforms.results import (
    ActionResult,
    DeployResult,
    NodeEnvironment,
    Outcome,
    PlatformError,
    RunStatus,
    WorkflowStatus,
)
from scanflow_agents.workflows import Application, ServiceNode, Workflow

logger = logging.getLogger(__name__)


class KubernetesPlatform:
    """Workflows on a Kubernetes cluster, one namespace per team.

    Service nodes become a Deployment and a Service each; batch runs become
    Jobs created in dependency order, or one Argo Workflow; scaling patches
    the scale subresource; a redeploy replaces the pod template (a rolling
    update); builds are Kaniko Jobs. Only objects labelled as this
    platform's are ever patched or deleted.

    Calls that take a workflow name act in the namespace of ``team`` if
    given, else of the team the workflow was last deployed or run for by
    this instance, else of the settings' team. Leaving the context manager
    stops following runs; what runs on the cluster keeps running (``delete``
    removes it)::

        async with KubernetesPlatform(KubernetesPlatformSettings(team="vision")) as k8s:
            await k8s.deploy(workflow)

    Args:
        settings: Cluster, images and what pods are told.
        client: An API client to use instead of one made from the settings.
        on_run_finished: Called with the final status of every run; its
            failures are logged.
    """

    def __init__(
        self,
        settings: KubernetesPlatformSettings | None = None,
        *,
        client: KubeClient | None = None,
        on_run_finished: RunCallback | None = None,
    ) -> None:
        self.settings = settings or KubernetesPlatformSettings()
        self.on_run_finished = on_run_finished
        self._client = client
        self._own_client = client is None
        self._connecting = asyncio.Lock()
        self._teams: dict[str, str] = {}
        self._namespaces: set[str] = set()
        self._argo: bool | None = None
        self._runs: OrderedDict[str, BatchRun] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    async def __aenter__(self) -> KubernetesPlatform:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop following runs and close the connection; safe to call twice."""
        await asyncio.gather(*(stop(task) for task in self._tasks.values()))
        self._tasks.clear()
        if self._client is not None and self._own_client:
            await self._client.close()
            self._client = None

    # -- Build ----------------------------------------------------------------

    async def build(
        self, target: Application | Workflow, *, team: str | None = None
    ) -> ImageBuildResult:
        """Build and push an image for every node (and agent) that needs one.

        Nodes with an ``image`` of their own, or with neither requirements nor
        scripts, need none; they are listed with the image they run. Images
        are built concurrently, one Kaniko Job each.
        """
        team = target.team if isinstance(target, Application) else self._team(target.name, team)
        workflows = target.workflows if isinstance(target, Application) else (target,)
        contexts, images, envs = [], {}, []
        for workflow in workflows:
            for node in workflow.nodes:
                key = f"{workflow.name}/{node.name}"
                if needs_build(node):
                    context = await asyncio.to_thread(node_context, self.settings, workflow, node)
                    contexts.append((key, node.name, context))
                else:
                    images[key] = node_image(self.settings, workflow, node)
                    envs.append(NodeEnvironment(node=node.name, python="python", reused=True))
        if isinstance(target, Application):
            for agent in target.agents:
                if needs_agent_build(agent):
                    context = await asyncio.to_thread(
                        agent_context, self.settings, target.name, agent
                    )
                    contexts.append((f"agent/{agent.name}", agent.name, context))
                else:
                    images[f"agent/{agent.name}"] = self.settings.agent_image
        await self._prepare(team)
        client = await self._api()
        reused = await asyncio.gather(
            *(build_image(client, self.settings, team, context) for _, _, context in contexts)
        )
        for (key, name, context), was_reused in zip(contexts, reused, strict=True):
            assert self.settings.registry is not None  # build_image checked it
            images[key] = context.image(self.settings.registry)
            envs.append(
                NodeEnvironment(
                    node=name, python="python", requirements_hash=context.tag, reused=was_reused
                )
            )
        outcome: Outcome = "unchanged" if all(reused) else "created"
        return ImageBuildResult(
            target=target.name, outcome=outcome, environments=envs, images=images
        )

    # -- Deploy ---------------------------------------------------------------

    async def deploy(
        self, workflow: Workflow, *, team: str | None = None, application: str | None = None
    ) -> DeployResult:
        """Make the workflow's services run as declared (image, model, replicas).

        A Deployment and a Service per service node; an unchanged definition
        changes nothing, a changed one is patched (a rolling update), and
        services of nodes no longer in the workflow are deleted.
        """
        if workflow.kind != "online":
            raise PlatformError(
                "invalid",
                f"workflow {workflow.name!r} is a batch workflow; run it instead of deploying it",
            )
        team = self._team(workflow.name, team)
        self._teams[workflow.name] = team
        await self._prepare(team)
        client, namespace = await self._api(), self.settings.namespace(team)
        results: list[ActionResult] = []
        for node in workflow.services:
            if node.image is None and needs_build(node):
                node = node.model_copy(update={"image": node_image(self.settings, workflow, node)})
            deployment = service_deployment(self.settings, team, workflow.name, node, application)
            done, changes = await ensure(client, DEPLOYMENTS, deployment)
            svc_done, _ = await ensure(
                client, SERVICES, service(self.settings, team, workflow.name, node, application)
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
        for stale in await client.find(DEPLOYMENTS, namespace, self._service_labels(workflow.name)):
            node_name = stale["metadata"]["labels"].get(naming.NODE)
            if node_name not in keep:
                await client.delete(DEPLOYMENTS, namespace, stale["metadata"]["name"])
                await client.delete(SERVICES, namespace, stale["metadata"]["name"])
                results.append(
                    action_result(
                        "deploy",
                        workflow.name,
                        node_name,
                        "deleted",
                        "node no longer in the workflow",
                    )
                )
        return DeployResult(
            workflow=workflow.name, outcome=overall([r.outcome for r in results]), services=results
        )

    async def deploy_application(self, application: Application) -> ApplicationDeployResult:
        """Deploy an application's online workflows and run its agents (a Deployment each).

        Batch workflows are not deployed: they are run. Agents no longer in
        the application are deleted.
        """
        team, namespace = application.team, self.settings.namespace(application.team)
        await self._prepare(team)
        workflows = [
            await self.deploy(w, team=team, application=application.name)
            for w in application.workflows
            if w.kind == "online"
        ]
        agents = await deploy_agents(await self._api(), self.settings, application)
        outcomes = [w.outcome for w in workflows] + [a.outcome for a in agents]
        return ApplicationDeployResult(
            application=application.name,
            namespace=namespace,
            outcome=overall(outcomes),
            workflows=workflows,
            agents=agents,
        )

    # -- Run ------------------------------------------------------------------

    async def run(
        self,
        workflow: Workflow,
        *,
        run_id: str | None = None,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        team: str | None = None,
        application: str | None = None,
    ) -> str:
        """Start a batch run (Jobs, or one Argo Workflow) and return its id at once."""
        if run_id is not None and run_id in self._runs:
            return run_id
        if not workflow.executors:
            raise PlatformError(
                "invalid", f"workflow {workflow.name!r} has no executor nodes to run"
            )
        unknown = set(parameters or {}) - {n.name for n in workflow.executors}
        if unknown:
            raise PlatformError(
                "invalid",
                f"parameters for unknown executor(s) {sorted(unknown)} "
                f"of workflow {workflow.name!r}",
            )
        images = {
            n.name: await asyncio.to_thread(node_image, self.settings, workflow, n)
            for n in workflow.executors
        }
        team = self._team(workflow.name, team)
        self._teams[workflow.name] = team
        await self._prepare(team)
        run_id = run_id or f"{workflow.name}-{uuid.uuid4().hex[:8]}"
        batch = BatchRun(
            await self._api(),
            self.settings,
            team,
            workflow,
            run_id,
            images,
            parameters or {},
            application=application,
            argo=await self._use_argo(),
        )
        self._runs[run_id] = batch
        self._tasks[run_id] = guarded(self._execute(batch), name=f"run {run_id}", logger=logger)
        while len(self._runs) > self.settings.kept_runs:
            oldest = next(iter(self._runs))
            if not self._runs[oldest].status.done:
                break
            del self._runs[oldest]
        return run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """Wait for a run to end and return its final status."""
        task = self._tasks.get(run_id)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                raise TimeoutError(f"run {run_id} did not end within {timeout} s")
        return await self.run_status(run_id)

    async def run_status(self, run_id: str) -> RunStatus:
        """A copy of the run's current status."""
        if run_id not in self._runs:
            raise PlatformError("not_found", f"no run {run_id!r} on the Kubernetes platform")
        return self._runs[run_id].status.model_copy(deep=True)

    # -- Actuators on services --------------------------------------------------

    async def scale(
        self, workflow: str, node: str, replicas: int, *, team: str | None = None
    ) -> ActionResult:
        """Set a service node's replicas through the Deployment's scale subresource."""
        if replicas < 0:
            raise PlatformError(
                "invalid",
                f"scale {workflow}/{node}: field 'replicas' must be 0 or more, not {replicas}",
            )
        namespace, current = await self._service(workflow, node, team)
        before = (current.get("spec") or {}).get("replicas")
        if before == replicas:
            return action_result(
                "scale",
                workflow,
                node,
                "unchanged",
                f"already {replicas} replica(s)",
                replicas=replicas,
            )
        name = current["metadata"]["name"]
        await (await self._api()).patch(
            DEPLOYMENTS, namespace, name, {"spec": {"replicas": replicas}}, sub="scale"
        )
        return action_result(
            "scale",
            workflow,
            node,
            "updated",
            f"scaled {namespace}/{name} from {before} to {replicas} replica(s)",
            before=before,
            replicas=replicas,
        )

    async def redeploy(
        self,
        workflow: str,
        node: str,
        model_uri: str,
        *,
        team: str | None = None,
        force: bool = False,
    ) -> ActionResult:
        """Roll a service node to another model: its pod template is replaced.

        Args:
            force: Restart even if the model URI is the one served (an alias
                such as ``models:/digits@production`` that now names another
                version).
        """
        if not model_uri.strip():
            raise PlatformError(
                "invalid", f"redeploy {workflow}/{node}: field 'model_uri' is empty"
            )
        namespace, current = await self._service(workflow, node, team)
        notes = naming.annotations_of(current)
        previous = notes.get(naming.MODEL_URI)
        if previous == model_uri and not force:
            return action_result(
                "redeploy",
                workflow,
                node,
                "unchanged",
                f"already serving {model_uri}",
                model_uri=model_uri,
            )
        spec = notes.get(naming.SPEC)
        if spec is None:
            raise PlatformError(
                "failed", f"{naming.describe(current)} has no {naming.SPEC} annotation to re-render"
            )
        declared = ServiceNode.model_validate_json(spec).model_copy(update={"model_uri": model_uri})
        labels = current["metadata"]["labels"]
        desired = service_deployment(
            self.settings, labels[naming.TEAM], workflow, declared, labels.get(naming.APPLICATION)
        )
        template = desired["spec"]["template"]
        stamp = datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="seconds")
        template["metadata"]["annotations"][naming.RESTARTED_AT] = stamp
        ops: list[Obj] = [
            ownership_test(),
            {"op": "replace", "path": pointer("spec", "template"), "value": template},
        ]
        for key, value in desired["metadata"]["annotations"].items():
            ops.append(
                {"op": "add", "path": pointer("metadata", "annotations", key), "value": value}
            )
        name = current["metadata"]["name"]
        await (await self._api()).patch(DEPLOYMENTS, namespace, name, ops, kind="json")
        return action_result(
            "redeploy",
            workflow,
            node,
            "updated",
            f"rolling {namespace}/{name} from {previous} to {model_uri}",
            previous=previous,
            model_uri=model_uri,
            restarted_at=stamp,
        )

    # -- Status and delete ------------------------------------------------------

    async def status(self, workflow: str, *, team: str | None = None) -> WorkflowStatus:
        """Services (with each pod's readiness) and remembered runs of a workflow."""
        namespace = self.settings.namespace(self._team(workflow, team))
        client = await self._api()
        wanted = self._service_labels(workflow)
        deployments = await client.find(DEPLOYMENTS, namespace, wanted)
        pods = await client.find(PODS, namespace, wanted) if deployments else []
        services = [service_status(namespace, d, pods) for d in deployments]
        runs = [
            b.status.model_copy(deep=True)
            for b in self._runs.values()
            if b.workflow.name == workflow
        ]
        return WorkflowStatus(
            workflow=workflow, deployed=bool(deployments), services=services, runs=runs
        )

    async def delete(self, workflow: str, *, team: str | None = None) -> ActionResult:
        """Delete the workflow's services and runs (only objects this platform made).

        Build Jobs are kept: they record which images exist.
        """
        namespace = self.settings.namespace(self._team(workflow, team))
        running = [
            r for r, b in self._runs.items() if b.workflow.name == workflow and not b.status.done
        ]
        await asyncio.gather(*(stop(self._tasks.pop(r, None)) for r in running))
        client = await self._api()
        wanted = {naming.MANAGED_BY: naming.MANAGER, naming.WORKFLOW: workflow}
        deleted: dict[str, int] = {}
        for resource in (ARGO_WORKFLOWS, JOBS, SERVICES, DEPLOYMENTS):
            for obj in await client.find(resource, namespace, wanted):
                if obj["metadata"].get("labels", {}).get(naming.COMPONENT) == "build":
                    continue
                if await client.delete(resource, namespace, obj["metadata"]["name"]):
                    deleted[resource.plural] = deleted.get(resource.plural, 0) + 1
        if not deleted and not running:
            return action_result(
                "delete",
                workflow,
                None,
                "absent",
                f"nothing of workflow {workflow!r} in {namespace}",
            )
        summary = ", ".join(f"{n} {kind}" for kind, n in deleted.items()) or "no objects"
        return action_result(
            "delete",
            workflow,
            None,
            "deleted",
            f"deleted {summary} in {namespace}; cancelled {len(running)} run(s)",
            **deleted,
        )

    async def delete_application(self, application: Application) -> list[ActionResult]:
        """Delete an application's workflows and agents."""
        team = application.team
        results = [await self.delete(w.name, team=team) for w in application.workflows]
        client, namespace = await self._api(), self.settings.namespace(team)
        wanted = {
            **self._labels(team),
            naming.APPLICATION: application.name,
            naming.COMPONENT: "agent",
        }
        gone = [
            obj["metadata"]["name"]
            for obj in await client.find(DEPLOYMENTS, namespace, wanted)
            if await client.delete(DEPLOYMENTS, namespace, obj["metadata"]["name"])
        ]
        outcome: Outcome = "deleted" if gone else "absent"
        results.append(
            action_result(
                "delete", application.name, None, outcome, f"agents deleted: {gone}", kind="agents"
            )
        )
        return results

    # -- Helpers ------------------------------------------------------------------

    async def _api(self) -> KubeClient:
        async with self._connecting:
            if self._client is None:
                self._client = await KubeClient.connect(self.settings)
        return self._client

    def _team(self, workflow: str, team: str | None) -> str:
        return team or self._teams.get(workflow) or self.settings.team

    async def _prepare(self, team: str) -> None:
        namespace = self.settings.namespace(team)
        if not self.settings.create_namespaces or namespace in self._namespaces:
            return
        if await (await self._api()).create_namespace(namespace):
            self._namespaces.add(namespace)

    async def _use_argo(self) -> bool:
        if self.settings.argo != "auto":
            return self.settings.argo == "always"
        if self._argo is None:
            self._argo = await (await self._api()).serves("argoproj.io", "v1alpha1")
            logger.info(
                "Argo Workflows %s",
                "found: batch runs are Workflows"
                if self._argo
                else "not found: batch runs are Jobs",
            )
        return self._argo

    def _labels(self, team: str) -> dict[str, str]:
        return {naming.MANAGED_BY: naming.MANAGER, naming.TEAM: team}

    @staticmethod
    def _service_labels(workflow: str) -> dict[str, str]:
        return {
            naming.MANAGED_BY: naming.MANAGER,
            naming.WORKFLOW: workflow,
            naming.COMPONENT: "service",
        }

    async def _service(self, workflow: str, node: str, team: str | None) -> tuple[str, Obj]:
        namespace = self.settings.namespace(self._team(workflow, team))
        wanted = {**self._service_labels(workflow), naming.NODE: node}
        current = await owned(
            await self._api(),
            DEPLOYMENTS,
            namespace,
            service_name(workflow, node),
            wanted,
            f"service {node!r} of workflow {workflow!r}",
        )
        return namespace, current

    async def _execute(self, batch: BatchRun) -> None:
        try:
            await batch.execute()
        finally:
            status = batch.status
            logger.info("run %s of workflow %s: %s", status.run_id, status.workflow, status.message)
            if self.on_run_finished is not None:
                try:
                    result = self.on_run_finished(status.model_copy(deep=True))
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("run %s: the completion callback failed", status.run_id)
