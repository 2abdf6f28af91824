"""The local platform: workflows as processes on this machine."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from scanflow_agents.platforms.base import PlatformBase, check_deployable, check_parameters
from scanflow_agents.platforms.local.building import Environments
from scanflow_agents.platforms.local.running import BatchRun
from scanflow_agents.platforms.local.services import ReplicaSet
from scanflow_agents.platforms.local.settings import LocalPlatformSettings
from scanflow_agents.platforms.results import (
    ActionResult,
    BuildResult,
    DeployResult,
    NodeEnvironment,
    Outcome,
    PlatformError,
    WorkflowStatus,
    action_result,
    overall,
)
from scanflow_agents.platforms.runs import RunCallback, RunRecord, RunStore
from scanflow_agents.workflows import Application, ExecutorNode, Workflow

logger = logging.getLogger(__name__)


class LocalPlatform(PlatformBase):
    """Executors as subprocesses, services as replica processes on one port.

    Use it as an async context manager: leaving it stops every service and
    cancels every run it started::

        async with LocalPlatform(LocalPlatformSettings(tracking_uri=uri)) as platform:
            await platform.deploy(workflow)

    Runs are child processes: they cannot outlive the platform. Closing it
    stops them and keeps their end, unreported, in the run store; a platform
    opened later on the same store reports it from ``resume``.

    One machine has one namespace: the ``team`` of a call is accepted and
    changes nothing.

    Args:
        settings: Where files go and what processes are told.
        on_run_finished: Called with the final status of every run (the
            planner publishes it as an event); its failures are logged.
        store: Where run records are kept (default: in memory).
    """

    name = "local"
    outlives = False  # runs are child processes

    def __init__(
        self,
        settings: LocalPlatformSettings | None = None,
        *,
        on_run_finished: RunCallback | None = None,
        store: RunStore | None = None,
    ) -> None:
        self.settings = settings or LocalPlatformSettings()
        super().__init__(
            kept_runs=self.settings.kept_runs, on_run_finished=on_run_finished, store=store
        )
        self.environments = Environments(
            self.settings.base_dir.resolve() / "envs", self.settings.python
        )
        self._services: dict[tuple[str, str], ReplicaSet] = {}
        self._deployed: dict[str, Workflow] = {}

    async def _release(self) -> None:
        # Services are processes of this one: they stop with it.
        await asyncio.gather(*(s.close() for s in self._services.values()))
        self._services.clear()
        self._deployed.clear()

    async def build(
        self, target: Application | Workflow, *, team: str | None = None
    ) -> BuildResult:
        """Prepare a venv for every node with requirements (cached by their hash)."""
        workflows = target.workflows if isinstance(target, Application) else (target,)
        envs: list[NodeEnvironment] = []
        for workflow in workflows:
            for node in workflow.nodes:
                envs.append(
                    await self.environments.prepare(
                        node.name, node.requirements, inherit=not isinstance(node, ExecutorNode)
                    )
                )
        outcome: Outcome = "unchanged" if all(e.reused for e in envs) else "created"
        return BuildResult(target=target.name, outcome=outcome, environments=envs)

    async def deploy(self, workflow: Workflow, *, team: str | None = None) -> DeployResult:
        """Start the workflow's services, or bring them to the declared model and replicas."""
        check_deployable(workflow)
        self._deployed[workflow.name] = workflow
        results = []
        for node in workflow.services:
            key = (workflow.name, node.name)
            if key not in self._services:
                env = await self.environments.prepare(node.name, node.requirements, inherit=True)
                self._services[key] = ReplicaSet(workflow.name, node, self.settings, env.python)
                async with self._services[key].lock:
                    await self._services[key].scale(node.replicas)
                results.append(
                    action_result(
                        "deploy",
                        *key,
                        "created",
                        f"started {node.replicas} replica(s) of {node.model_uri}",
                    )
                )
                continue
            if self._services[key].model_uri != node.model_uri:
                results.append(await self.redeploy(workflow.name, node.name, node.model_uri))
            scaled = await self.scale(workflow.name, node.name, node.replicas)
            if scaled.changed or not results:
                results.append(scaled)
        outcomes = [r.outcome for r in results]
        return DeployResult(workflow=workflow.name, outcome=overall(outcomes), services=results)

    async def run(
        self,
        workflow: Workflow,
        *,
        run_id: str | None = None,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        team: str | None = None,
    ) -> str:
        """Start a batch run in the background and return its id at once."""
        if run_id is not None and await self.runs.known(run_id):
            return run_id
        check_parameters(workflow, parameters)
        run_id = run_id or f"{workflow.name}-{uuid.uuid4().hex[:12]}"
        batch = BatchRun(workflow, run_id, self.settings, self.environments, parameters)
        record = RunRecord.of(
            batch.status, "local", workflow, team=team, parameters=dict(parameters or {})
        )
        await self.runs.start(batch, record)
        return run_id

    async def _pick_up(self, record: RunRecord) -> None:
        # A run an earlier instance left unfinished (ended ones it closed are
        # reported as they ended) was lost with its process, the planner that
        # died: it is reported failed, saying so.
        status = record.status
        status.state, status.message = (
            "failed",
            (
                f"run {status.run_id} lost: the platform that ran it stopped without "
                "closing (its steps were child processes)"
            ),
        )
        for node in status.nodes.values():
            if node.state == "running":
                node.state, node.reason = "failed", "lost with the platform's process"
        status.finish()
        status.finished_at = status.finished_at or time.time()
        await self.runs.adopt(record)

    async def scale(
        self, workflow: str, node: str, replicas: int, *, team: str | None = None
    ) -> ActionResult:
        """Start or stop replicas of a service node until ``replicas`` run."""
        if replicas < 0:
            raise PlatformError("invalid", f"replicas must be 0 or more, not {replicas}")
        service = self._service(workflow, node)
        async with service.lock:
            before = len(service.replicas)
            if before == replicas:
                return action_result(
                    "scale",
                    workflow,
                    node,
                    "unchanged",
                    f"already {replicas} replica(s)",
                    replicas=replicas,
                )
            await service.scale(replicas)
        return action_result(
            "scale",
            workflow,
            node,
            "updated",
            f"scaled from {before} to {replicas} replica(s)",
            before=before,
            replicas=replicas,
        )

    async def redeploy(
        self, workflow: str, node: str, model_uri: str, *, team: str | None = None
    ) -> ActionResult:
        """Roll a service node's replicas to ``model_uri``, one at a time."""
        service = self._service(workflow, node)
        async with service.lock:
            previous = service.model_uri
            if previous == model_uri and all(r.model_uri == model_uri for r in service.replicas):
                return action_result(
                    "redeploy",
                    workflow,
                    node,
                    "unchanged",
                    f"already serving {model_uri}",
                    model_uri=model_uri,
                )
            try:
                replaced = await service.redeploy(model_uri)
            except PlatformError as exc:
                if exc.code != "failed":
                    raise
                # A new replica never became ready: the replaced ones go back to
                # the previous model, so the service serves one model again.
                await service.redeploy(previous)
                return action_result(
                    "redeploy",
                    workflow,
                    node,
                    "failed",
                    f"rollout to {model_uri} failed ({exc}); rolled back to {previous}",
                    previous=previous,
                    model_uri=model_uri,
                    rolled_back=True,
                    reason=str(exc),
                )
        return action_result(
            "redeploy",
            workflow,
            node,
            "updated",
            f"rolled {replaced} replica(s) from {previous} to {model_uri}",
            previous=previous,
            model_uri=model_uri,
            replaced=replaced,
        )

    async def status(self, workflow: str, *, team: str | None = None) -> WorkflowStatus:
        """Services (with each replica's health) and remembered runs of a workflow."""
        services = [await s.status() for (w, _), s in self._services.items() if w == workflow]
        runs = self.runs.statuses(workflow)
        return WorkflowStatus(
            workflow=workflow, deployed=workflow in self._deployed, services=services, runs=runs
        )

    async def delete(self, workflow: str, *, team: str | None = None) -> ActionResult:
        """Stop the workflow's services and cancel its running runs (their ends are reported)."""
        keys = [k for k in self._services if k[0] == workflow]
        runs = await self.runs.cancel(workflow)
        if not keys and not runs and workflow not in self._deployed:
            return action_result("delete", workflow, None, "absent", "nothing to delete")
        await asyncio.gather(*(self._services.pop(k).close() for k in keys))
        self._deployed.pop(workflow, None)
        return action_result(
            "delete",
            workflow,
            None,
            "deleted",
            f"stopped {len(keys)} service(s) and {len(runs)} run(s)",
        )

    def _service(self, workflow: str, node: str) -> ReplicaSet:
        try:
            return self._services[(workflow, node)]
        except KeyError:
            raise PlatformError(
                "not_found",
                f"no service {node!r} of workflow {workflow!r} is deployed on the local platform",
            ) from None
