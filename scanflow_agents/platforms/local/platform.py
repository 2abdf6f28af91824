"""The local platform: workflows as processes on this machine."""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from scanflow_agents._kit.tasks import guarded, stop
from scanflow_agents.platforms.base import RunCallback
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
    RunStatus,
    WorkflowStatus,
)
from scanflow_agents.workflows import Application, ExecutorNode, Workflow

logger = logging.getLogger(__name__)


class LocalPlatform:
    """Executors as subprocesses, services as replica processes on one port.

    Use it as an async context manager: leaving it stops every service and
    cancels every run it started::

        async with LocalPlatform(LocalPlatformSettings(tracking_uri=uri)) as platform:
            await platform.deploy(workflow)

    Args:
        settings: Where files go and what processes are told.
        on_run_finished: Called with the final status of every run (the
            planner publishes it as an event); its failures are logged.
    """

    def __init__(
        self,
        settings: LocalPlatformSettings | None = None,
        *,
        on_run_finished: RunCallback | None = None,
    ) -> None:
        self.settings = settings or LocalPlatformSettings()
        self.on_run_finished = on_run_finished
        self.environments = Environments(
            self.settings.base_dir.resolve() / "envs", self.settings.python
        )
        self._services: dict[tuple[str, str], ReplicaSet] = {}
        self._deployed: dict[str, Workflow] = {}
        self._runs: OrderedDict[str, BatchRun] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    async def __aenter__(self) -> LocalPlatform:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel running runs and stop every service; safe to call twice."""
        await asyncio.gather(*(stop(task) for task in self._tasks.values()))
        self._tasks.clear()
        await asyncio.gather(*(s.close() for s in self._services.values()))
        self._services.clear()
        self._deployed.clear()

    async def build(self, target: Application | Workflow) -> BuildResult:
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

    async def deploy(self, workflow: Workflow) -> DeployResult:
        """Start the workflow's services, or bring them to the declared model and replicas."""
        if workflow.kind != "online":
            raise PlatformError(
                "invalid",
                f"workflow {workflow.name!r} is a batch workflow; run it instead of deploying it",
            )
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
                    self._result(
                        "deploy",
                        key,
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
        outcomes = {r.outcome for r in results}
        overall: Outcome = (
            "unchanged"
            if outcomes == {"unchanged"}
            else ("created" if outcomes == {"created"} else "updated")
        )
        return DeployResult(workflow=workflow.name, outcome=overall, services=results)

    async def run(
        self,
        workflow: Workflow,
        *,
        run_id: str | None = None,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> str:
        """Start a batch run in the background and return its id at once."""
        if run_id is not None and run_id in self._runs:
            return run_id
        unknown = set(parameters or {}) - {n.name for n in workflow.executors}
        if unknown:
            raise PlatformError(
                "invalid",
                f"parameters for unknown executor(s) "
                f"{sorted(unknown)} of workflow {workflow.name!r}",
            )
        run_id = run_id or f"{workflow.name}-{uuid.uuid4().hex[:12]}"
        batch = BatchRun(workflow, run_id, self.settings, self.environments, parameters)
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
            await asyncio.wait_for(asyncio.shield(task), timeout)
        return await self.run_status(run_id)

    async def run_status(self, run_id: str) -> RunStatus:
        """A copy of the run's current status."""
        if run_id not in self._runs:
            raise PlatformError("not_found", f"no run {run_id!r} on the local platform")
        return self._runs[run_id].status.model_copy(deep=True)

    async def scale(self, workflow: str, node: str, replicas: int) -> ActionResult:
        """Start or stop replicas of a service node until ``replicas`` run."""
        if replicas < 0:
            raise PlatformError("invalid", f"replicas must be 0 or more, not {replicas}")
        service = self._service(workflow, node)
        async with service.lock:
            before = len(service.replicas)
            if before == replicas:
                return self._result(
                    "scale",
                    (workflow, node),
                    "unchanged",
                    f"already {replicas} replica(s)",
                    replicas=replicas,
                )
            await service.scale(replicas)
        return self._result(
            "scale",
            (workflow, node),
            "updated",
            f"scaled from {before} to {replicas} replica(s)",
            before=before,
            replicas=replicas,
        )

    async def redeploy(self, workflow: str, node: str, model_uri: str) -> ActionResult:
        """Roll a service node's replicas to ``model_uri``, one at a time."""
        service = self._service(workflow, node)
        async with service.lock:
            previous = service.model_uri
            if previous == model_uri and all(r.model_uri == model_uri for r in service.replicas):
                return self._result(
                    "redeploy",
                    (workflow, node),
                    "unchanged",
                    f"already serving {model_uri}",
                    model_uri=model_uri,
                )
            replaced = await service.redeploy(model_uri)
        return self._result(
            "redeploy",
            (workflow, node),
            "updated",
            f"rolled {replaced} replica(s) from {previous} to {model_uri}",
            previous=previous,
            model_uri=model_uri,
            replaced=replaced,
        )

    async def status(self, workflow: str) -> WorkflowStatus:
        """Services (with each replica's health) and remembered runs of a workflow."""
        services = [await s.status() for (w, _), s in self._services.items() if w == workflow]
        runs = [
            b.status.model_copy(deep=True)
            for b in self._runs.values()
            if b.workflow.name == workflow
        ]
        return WorkflowStatus(
            workflow=workflow, deployed=workflow in self._deployed, services=services, runs=runs
        )

    async def delete(self, workflow: str) -> ActionResult:
        """Stop the workflow's services and cancel its running runs."""
        keys = [k for k in self._services if k[0] == workflow]
        runs = [
            r for r, b in self._runs.items() if b.workflow.name == workflow and not b.status.done
        ]
        if not keys and not runs and workflow not in self._deployed:
            return self._result("delete", (workflow, None), "absent", "nothing to delete")
        await asyncio.gather(*(stop(self._tasks.pop(r, None)) for r in runs))
        await asyncio.gather(*(self._services.pop(k).close() for k in keys))
        self._deployed.pop(workflow, None)
        return self._result(
            "delete",
            (workflow, None),
            "deleted",
            f"stopped {len(keys)} service(s) and {len(runs)} run(s)",
        )

    async def _execute(self, batch: BatchRun) -> None:
        try:
            status = await batch.execute()
        finally:
            self._tasks.pop(batch.status.run_id, None)
        logger.info("run %s of workflow %s: %s", status.run_id, status.workflow, status.message)
        if self.on_run_finished is not None:
            try:
                result = self.on_run_finished(status.model_copy(deep=True))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("run %s: the completion callback failed", status.run_id)

    def _service(self, workflow: str, node: str) -> ReplicaSet:
        try:
            return self._services[(workflow, node)]
        except KeyError:
            raise PlatformError(
                "not_found",
                f"no service {node!r} of workflow {workflow!r} is deployed on the local platform",
            ) from None

    @staticmethod
    def _result(
        action: str, key: tuple[str, str | None], outcome: Any, message: str, **details: Any
    ) -> ActionResult:
        return ActionResult(
            action=action,
            workflow=key[0],
            node=key[1],
            outcome=outcome,
            message=message,
            details=details,
        )
