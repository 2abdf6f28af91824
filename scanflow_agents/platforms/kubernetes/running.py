"""Batch runs on a cluster: Jobs in dependency order, or one Argo Workflow.

With Jobs, this process is the scheduler: a step's Job is created when
:mod:`~scanflow_agents.platforms.scheduling` says the step is ready (all it
depends on succeeded, and no step failed), and the run names the first
failing step. With Argo, the Workflow controller schedules and this process only reads the
Workflow's status.

Either way the state is read by polling (one list or get per tick, every
``poll_interval`` seconds, plus one list of the run's pods while a step has
not started): a tick costs the same however many steps run, and it
survives API-server restarts that would cut a watch.

Nothing waits forever: steps whose pods cannot start fail with the reason
(:mod:`~scanflow_agents.platforms.kubernetes.pods`), Jobs carry a deadline,
a run of Jobs stops after ``run_timeout``, and an Argo Workflow that no
controller picks up within ``argo_pickup_timeout`` fails the run.

A run can be followed again by another process (a restarted planner): the
status it starts from keeps the steps that ended, the Jobs of running steps
are adopted (their names are the run's), an Argo Workflow is read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.client import (
    ARGO_WORKFLOWS,
    JOBS,
    RETRIED,
    ApiError,
    KubeClient,
    Obj,
)
from scanflow_agents.platforms.kubernetes.jobs import (
    ARGO_PHASES,
    RunContext,
    argo_workflow,
    job,
    job_name,
    job_state,
)
from scanflow_agents.platforms.kubernetes.pods import PendingWatch
from scanflow_agents.platforms.results import NodeRun, RunStatus
from scanflow_agents.platforms.scheduling import ready

logger = logging.getLogger(__name__)


class BatchRun:
    """One run of a batch workflow; ``status`` is live while ``execute`` runs.

    Args:
        client: The API access.
        context: What the run's objects are built from (settings, team,
            workflow, run id, images, parameters, application).
        argo: One Argo Workflow instead of Jobs.
        status: Where to start from (a run followed again); new if None.
        on_change: Awaited after a step changed state (the registry stores it).
    """

    def __init__(
        self,
        client: KubeClient,
        context: RunContext,
        *,
        argo: bool = False,
        status: RunStatus | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.context = context
        self.settings, self.workflow = context.settings, context.workflow
        self.namespace = context.namespace
        self.argo = argo
        self.on_change = on_change
        self.status = status or RunStatus(
            run_id=context.run_id,
            workflow=self.workflow.name,
            nodes={n.name: NodeRun(node=n.name) for n in self.workflow.executors},
            run_dir=f"{'workflows' if argo else 'jobs'}.{self.namespace}",
        )
        self.pending = PendingWatch(
            client,
            self.namespace,
            naming.label_value(context.run_id),
            self.settings.pending_timeout,
        )
        self._seen = self._states()

    async def execute(self) -> RunStatus:
        """Run to the end; cancelling marks the run cancelled (objects stay)."""
        self.status.state = "running"
        self.status.started_at = self.status.started_at or time.time()
        try:
            if self.argo:
                await self._argo()
            else:
                await self._jobs()
        except asyncio.CancelledError:
            self.status.state = "cancelled"
            self.status.message = "run cancelled"
            for record in self.status.nodes.values():
                if record.state == "running":
                    record.state = "cancelled"
            raise
        except Exception as exc:  # The API failed under us: the run cannot be followed.
            self.status.state = "failed"
            self.status.message = f"run {self.status.run_id} lost: {exc}"
            raise
        finally:
            self.status.finish()
        return self.status

    # -- Jobs ---------------------------------------------------------------

    async def _polled(self, tick: Callable[[], Awaitable[bool]]) -> None:
        # The run lives on the cluster: an API server that does not answer for a
        # while (after the client's own retries) delays following it, it does not
        # lose it. The run's deadline still bounds the wait.
        while True:
            try:
                if await tick():
                    return
            except ApiError as exc:
                if exc.status not in RETRIED or self._overdue():
                    raise
                logger.warning("run %s: %s; still following it", self.status.run_id, exc)
            await asyncio.sleep(self.settings.poll_interval)

    async def _jobs(self) -> None:
        await self._polled(self._jobs_tick)

    async def _jobs_tick(self) -> bool:
        selector = {
            naming.RUN: naming.label_value(self.status.run_id),
            naming.WORKFLOW: self.workflow.name,
        }
        nodes = self.status.nodes
        running = [n for n, r in nodes.items() if r.state == "running"]
        if running:
            found = {
                j["metadata"]["name"]: j
                for j in await self.client.find(JOBS, self.namespace, selector)
            }
            for name in running:
                current = found.get(job_name(self.status.run_id, name))
                if current is None:
                    self._fail(name, "its Job disappeared")
                    continue
                state, why = job_state(current)
                if state == "succeeded":
                    nodes[name].state, nodes[name].finished_at = "succeeded", time.time()
                elif state == "failed":
                    self._fail(name, why or "job failed")
            await self._unstarted([n for n in running if nodes[n].state == "running"])
        if self._overdue():
            for name in [n for n, r in nodes.items() if r.state == "running"]:
                self._fail(name, f"the run's deadline ({self.settings.run_timeout:.0f} s) passed")
                await self.client.delete(JOBS, self.namespace, job_name(self.status.run_id, name))
        for name in ready(self.workflow, self.status):
            await self._start(name)
        await self._changed()
        return not any(r.state == "running" for r in nodes.values())

    async def _unstarted(self, running: list[str]) -> None:
        # Steps whose pod will not start fail now, and their Job goes (it would
        # keep pulling or waiting for room until its deadline).
        steps: dict[str, str | None] = {
            name: None if self.argo else job_name(self.status.run_id, name) for name in running
        }
        for name, reason in (await self.pending.stuck(steps)).items():
            self._fail(name, reason)
            if not self.argo:
                await self.client.delete(JOBS, self.namespace, job_name(self.status.run_id, name))

    def _overdue(self) -> bool:
        started = self.status.started_at or time.time()
        return time.time() - started > self.settings.run_timeout

    def _states(self) -> dict[str, str]:
        return {name: record.state for name, record in self.status.nodes.items()}

    async def _changed(self) -> None:
        states = self._states()
        if states != self._seen and self.on_change is not None:
            self._seen = states
            await self.on_change()

    async def _start(self, name: str) -> None:
        node = next(n for n in self.workflow.executors if n.name == name)
        body = job(self.context, node)
        record = self.status.nodes[name]
        record.state, record.started_at = "running", time.time()
        try:
            await self.client.create(JOBS, self.namespace, body)
            logger.info(
                "run %s: started Job %s/%s",
                self.status.run_id,
                self.namespace,
                body["metadata"]["name"],
            )
        except ApiError as exc:
            if exc.status != 409:
                self._fail(name, f"cannot create its Job: {exc}")
                return
            # The run id was used before (a caller retrying): adopt the Job if it
            # is this very step's, never someone else's object of the same name.
            existing = await self.client.get(JOBS, self.namespace, body["metadata"]["name"])
            if existing is None or not naming.matches(existing, body["metadata"]["labels"]):
                what = "an object" if existing is None else naming.describe(existing)
                self._fail(
                    name, f"{what} of the same name exists and is not this step's Job", logs=False
                )

    # -- Argo ---------------------------------------------------------------

    async def _argo(self) -> None:
        body = argo_workflow(self.context)
        name = body["metadata"]["name"]
        created = time.monotonic()
        try:
            await self.client.create(ARGO_WORKFLOWS, self.namespace, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            existing = await self.client.get(ARGO_WORKFLOWS, self.namespace, name)
            if existing is None or not naming.matches(existing, body["metadata"]["labels"]):
                what = "an object" if existing is None else naming.describe(existing)
                raise ApiError(
                    409, f"{what} named {name} exists and is not this run's Workflow"
                ) from exc
        logger.info("run %s: created Argo Workflow %s/%s", self.status.run_id, self.namespace, name)

        async def tick() -> bool:
            return await self._argo_tick(name, created)

        await self._polled(tick)

    async def _argo_tick(self, name: str, created: float) -> bool:
        current = await self.client.get(ARGO_WORKFLOWS, self.namespace, name)
        if current is None:
            raise ApiError(404, f"Argo Workflow {self.namespace}/{name} disappeared")
        status = current.get("status") or {}
        self._argo_nodes(status)
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed", "Error"):
            if phase != "Succeeded" and self.status.failed_node is None:
                self.status.message = f"Argo Workflow {name}: {status.get('message') or phase}"
                self.status.state = "failed"
            return True
        if not phase and time.monotonic() - created > self.settings.argo_pickup_timeout:
            await self.client.delete(ARGO_WORKFLOWS, self.namespace, name)
            self.status.state = "failed"
            self.status.message = (
                f"Argo Workflow {self.namespace}/{name}: no controller picked it up in "
                f"{self.settings.argo_pickup_timeout:.0f} s (is the workflow-controller "
                f"running, and does it watch namespace {self.namespace}?); it was deleted"
            )
            return True
        running = [n for n, r in self.status.nodes.items() if r.state in ("pending", "running")]
        if phase == "Running" and running:
            stuck = await self.pending.stuck(
                {n: None for n in running if self.status.nodes[n].state == "running"}
            )
            if stuck:
                for node, reason in stuck.items():
                    self._fail(node, reason)
                # Stop the Workflow: its stuck pod would wait until the deadline.
                await self.client.patch(
                    ARGO_WORKFLOWS, self.namespace, name, {"spec": {"shutdown": "Terminate"}}
                )
                return True
        await self._changed()
        return False

    def _argo_nodes(self, status: Obj) -> None:
        seen = {
            n.get("displayName"): n
            for n in (status.get("nodes") or {}).values()
            if n.get("displayName") in self.status.nodes
        }
        for name in self.workflow.topological_order():
            if name not in seen:
                continue
            record, node = self.status.nodes[name], seen[name]
            state = ARGO_PHASES.get(str(node.get("phase")), "running")
            if state != "pending" and record.started_at is None:
                record.started_at = time.time()
            if state == "failed" and record.state != "failed":
                self._fail(name, str(node.get("message") or "step failed"))
            elif state != "failed":
                record.state = state
                if state in ("succeeded", "skipped") and record.finished_at is None:
                    record.finished_at = time.time()

    # -- Both ---------------------------------------------------------------

    def _fail(self, name: str, reason: str, *, logs: bool = True) -> None:
        record = self.status.nodes[name]
        record.state, record.reason, record.finished_at = "failed", reason, time.time()
        if self.status.failed_node is None:
            self.status.failed_node = name
            where = (
                f"-l {naming.RUN}={naming.label_value(self.status.run_id)},{naming.NODE}={name}"
                if self.argo
                else f"job/{job_name(self.status.run_id, name)}"
            )
            hint = f"; see `kubectl logs -n {self.namespace} {where}`" if logs else ""
            self.status.message = (
                f"node {name!r} of workflow {self.workflow.name!r} failed: {reason}"
                f"{hint} (run {self.status.run_id})"
            )
