"""The Kubernetes platform: services as Deployments, batch runs as Jobs or Argo."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from scanflow_agents.platforms.base import PlatformBase, check_deployable, check_parameters
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
from scanflow_agents.platforms.kubernetes.checking import preflight
from scanflow_agents.platforms.kubernetes.client import (
    DEPLOYMENTS,
    PODS,
    KubeClient,
    Obj,
)
from scanflow_agents.platforms.kubernetes.deploying import (
    ApplicationDeployResult,
    delete_workflow,
    deploy_agents,
    deploy_services,
    owned,
)
from scanflow_agents.platforms.kubernetes.jobs import RunContext
from scanflow_agents.platforms.kubernetes.manifests import service_labels, service_name
from scanflow_agents.platforms.kubernetes.rollouts import roll
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
    action_result,
    overall,
)
from scanflow_agents.platforms.runs import RunCallback, RunRecord, RunStore
from scanflow_agents.workflows import Application, Workflow

logger = logging.getLogger(__name__)


class KubernetesPlatform(PlatformBase):
    """Workflows on a Kubernetes cluster, one namespace per team.

    Service nodes become a Deployment and a Service each; batch runs become
    Jobs created in dependency order, or one Argo Workflow; scaling patches
    the scale subresource; a redeploy replaces the pod template (a rolling
    update), waits for it and rolls back if the new pods never become ready;
    builds are rootless BuildKit Jobs. Only objects labelled as this
    platform's are ever patched or deleted.

    Calls that take a workflow name act in the namespace of ``team`` if
    given, else of the team the workflow was last deployed or run for by
    this instance, else of the settings' team. Leaving the context manager
    stops following runs; what runs on the cluster keeps running (``delete``
    removes it), and a platform opened later on the same run store follows
    it again from ``resume``::

        async with KubernetesPlatform(KubernetesPlatformSettings(team="vision")) as k8s:
            await k8s.deploy(workflow)

    Args:
        settings: Cluster, images and what pods are told.
        client: An API client to use instead of one made from the settings.
        on_run_finished: Called with the final status of every run; its
            failures are logged.
        store: Where run records are kept (default: in memory).
    """

    name = "kubernetes"
    outlives = True  # runs are the cluster's

    def __init__(
        self,
        settings: KubernetesPlatformSettings | None = None,
        *,
        client: KubeClient | None = None,
        on_run_finished: RunCallback | None = None,
        store: RunStore | None = None,
    ) -> None:
        self.settings = settings or KubernetesPlatformSettings()
        super().__init__(
            kept_runs=self.settings.kept_runs, on_run_finished=on_run_finished, store=store
        )
        self._client = client
        self._own_client = client is None
        self._connecting = asyncio.Lock()
        self._teams: dict[str, str] = {}
        self._namespaces: set[str] = set()
        self._argo: bool | None = None

    async def _release(self) -> None:
        # Only a connection this platform opened: a client it was given is the giver's.
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
        are built concurrently, one BuildKit Job each, in the build namespace.
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
        client = await self._api()
        reused = await asyncio.gather(
            *(build_image(client, self.settings, context) for _, _, context in contexts)
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
        check_deployable(workflow)
        team = self._team(workflow.name, team)
        self._teams[workflow.name] = team
        await self._prepare(team)
        results = await deploy_services(
            await self._api(), self.settings, team, workflow, application
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
        if run_id is not None and await self.runs.known(run_id):
            return run_id
        if not workflow.executors:
            raise PlatformError(
                "invalid", f"workflow {workflow.name!r} has no executor nodes to run"
            )
        check_parameters(workflow, parameters)
        images = {
            n.name: await asyncio.to_thread(node_image, self.settings, workflow, n)
            for n in workflow.executors
        }
        team = self._team(workflow.name, team)
        self._teams[workflow.name] = team
        await self._prepare(team)
        run_id = run_id or f"{workflow.name}-{uuid.uuid4().hex[:8]}"
        argo = await self._use_argo()
        record = RunRecord.of(
            RunStatus(run_id=run_id, workflow=workflow.name, nodes={}),
            "kubernetes",
            workflow,
            team=team,
            application=application,
            parameters={k: dict(v) for k, v in (parameters or {}).items()},
            details={"images": images, "argo": argo},
        )
        await self._follow(record, fresh=True)
        return run_id

    async def _follow(self, record: RunRecord, *, fresh: bool) -> None:
        run_id = record.status.run_id
        details = record.details
        context = RunContext(
            settings=self.settings,
            team=record.team or self.settings.team,
            workflow=record.load_workflow(),
            run_id=run_id,
            images=details["images"],
            parameters=record.parameters,
            application=record.application,
        )
        batch = BatchRun(
            await self._api(),
            context,
            argo=bool(details.get("argo")),
            status=None if fresh else record.status,
            on_change=lambda: self.runs.checkpoint(run_id),
        )
        await self.runs.start(batch, record)

    async def _pick_up(self, record: RunRecord) -> None:
        # An unfinished run goes on on the cluster (a restarted planner): it is
        # followed from where its record says it was.
        if record.team:
            self._teams.setdefault(record.status.workflow, record.team)
        await self._follow(record, fresh=False)

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
        """Roll a service node to another model and wait until its new pods serve.

        The pod template is replaced (a rolling update: new pods must be ready
        before old ones go). If the rollout fails (the controller's progress
        deadline, or ``rollout_deadline``), the previous template is put back
        and the answer is ``failed`` with ``details.rolled_back`` and why.

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
        return await roll(await self._api(), self.settings, namespace, current, model_uri, force)

    # -- Status and delete ------------------------------------------------------

    async def status(self, workflow: str, *, team: str | None = None) -> WorkflowStatus:
        """Services (with each pod's readiness) and remembered runs of a workflow."""
        namespace = self.settings.namespace(self._team(workflow, team))
        client = await self._api()
        wanted = service_labels(workflow)
        deployments = await client.find(DEPLOYMENTS, namespace, wanted)
        pods = await client.find(PODS, namespace, wanted) if deployments else []
        services = [service_status(namespace, d, pods) for d in deployments]
        runs = self.runs.statuses(workflow)
        return WorkflowStatus(
            workflow=workflow, deployed=bool(deployments), services=services, runs=runs
        )

    async def delete(self, workflow: str, *, team: str | None = None) -> ActionResult:
        """Delete the workflow's services and runs (only objects this platform made).

        Runs are cancelled first (their ends are reported), then the objects
        go (see :func:`~scanflow_agents.platforms.kubernetes.deploying.delete_workflow`).
        """
        namespace = self.settings.namespace(self._team(workflow, team))
        running = await self.runs.cancel(workflow)
        deleted = await delete_workflow(await self._api(), self.settings, namespace, workflow)
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

    # -- Preflight --------------------------------------------------------------------

    async def preflight(self) -> list[str]:
        """What the cluster lacks for this platform (namespaces, permissions, Argo's
        executor account), each with the command that fixes it; empty: all is there.

        See :mod:`.checking`. An unreachable API server is a problem too.
        """
        try:
            problems = await preflight(await self._api(), self.settings)
        except PlatformError as exc:  # ApiError included: no answer, or not the expected one
            return [f"the Kubernetes API does not answer the preflight: {exc}"]
        return [str(problem) for problem in problems]

    # -- Helpers ------------------------------------------------------------------

    async def _api(self) -> KubeClient:
        async with self._connecting:
            if self._client is None:
                self._client = await KubeClient.connect(self.settings)
        return self._client

    def _team(self, workflow: str, team: str | None) -> str:
        return team or self._teams.get(workflow) or self.settings.team

    async def _prepare(self, team: str) -> None:
        try:
            namespace = self.settings.managed(team)
        except ValueError as exc:
            raise PlatformError("invalid", str(exc)) from None
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

    async def _service(self, workflow: str, node: str, team: str | None) -> tuple[str, Obj]:
        namespace = self.settings.namespace(self._team(workflow, team))
        wanted = {**service_labels(workflow), naming.NODE: node}
        current = await owned(
            await self._api(),
            DEPLOYMENTS,
            namespace,
            service_name(workflow, node),
            wanted,
            f"service {node!r} of workflow {workflow!r}",
        )
        return namespace, current
