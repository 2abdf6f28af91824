"""Batch runs on this machine: executors as processes, in dependency order.

Nodes start as :mod:`~scanflow_agents.platforms.scheduling` says: once all
they depend on succeeded, and nothing new after a node failed (exit code not
0, or its timeout). The run reports the first failing node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scanflow_agents._kit.tasks import guarded
from scanflow_agents.platforms.base import CALL_FUNCTION
from scanflow_agents.platforms.local.building import Environments
from scanflow_agents.platforms.local.processes import spawn, terminate
from scanflow_agents.platforms.local.settings import LocalPlatformSettings
from scanflow_agents.platforms.results import NodeRun, RunStatus
from scanflow_agents.platforms.scheduling import ready
from scanflow_agents.workflows import ExecutorNode, Workflow

logger = logging.getLogger(__name__)


def command(
    node: ExecutorNode, python: str, base_dir: Path | None, parameters: Mapping[str, Any]
) -> list[str]:
    """The command line that runs an executor node with its parameters."""
    options: list[str] = []
    for key, value in parameters.items():
        options += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    entry = node.entry_point
    if entry.endswith(".py"):
        path = Path(entry) if base_dir is None else base_dir / entry
        return [python, str(path), *options]
    if ":" in entry:
        return [python, "-c", CALL_FUNCTION, entry, *options]
    return [python, "-m", entry, *options]


class BatchRun:
    """One run of a batch workflow; ``status`` is live while ``execute`` runs."""

    def __init__(
        self,
        workflow: Workflow,
        run_id: str,
        settings: LocalPlatformSettings,
        environments: Environments,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.workflow = workflow
        self.settings = settings
        self.environments = environments
        self.parameters = parameters or {}
        self.run_dir = settings.base_dir.resolve() / "runs" / run_id
        self.status = RunStatus(
            run_id=run_id,
            workflow=workflow.name,
            run_dir=str(self.run_dir),
            nodes={n.name: NodeRun(node=n.name) for n in workflow.executors},
        )

    async def execute(self) -> RunStatus:
        """Run every executor; returns the final status (also on cancellation)."""
        status = self.status
        status.state, status.started_at = "running", time.time()
        running: dict[asyncio.Task[None], str] = {}
        try:
            while True:
                for name in ready(self.workflow, status, running.values()):
                    task = guarded(self._node(name), name=f"{status.run_id}/{name}", logger=logger)
                    running[task] = name
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            status.state = "cancelled"
            status.message = "run cancelled"
            raise
        finally:
            self._finish()
        return status

    async def _node(self, name: str) -> None:
        node = self.workflow.node(name)
        assert isinstance(node, ExecutorNode)
        record = self.status.nodes[name]
        record.state, record.started_at = "running", time.time()
        record.log_path = str(self.run_dir / f"{name}.log")
        try:
            env = await self.environments.prepare(name, node.requirements)
            params = {**node.parameters, **self.parameters.get(name, {})}
            cwd = Path(node.workdir) if node.workdir else self.workflow.base_dir
            process = await spawn(
                command(node, env.python, self.workflow.base_dir, params),
                env=self._env(node, env.python),
                cwd=cwd,
                log_path=Path(record.log_path),
            )
            try:
                async with asyncio.timeout(node.timeout):
                    code = await process.wait()
            except TimeoutError:
                code = await terminate(process, self.settings.stop_timeout)
                record.reason = f"timed out after {node.timeout} s"
            except asyncio.CancelledError:
                await terminate(process, self.settings.stop_timeout)
                record.state = "cancelled"
                raise
        except Exception as exc:  # Could not even start: a bad path, a failed build.
            code, record.reason = -1, f"{type(exc).__name__}: {exc}"
        record.exit_code, record.finished_at = code, time.time()
        if code == 0 and record.reason is None:
            record.state = "succeeded"
            return
        record.state = "failed"
        if self.status.failed_node is None:
            self.status.failed_node, self.status.exit_code = name, code
            self.status.message = (
                f"node {name!r} of workflow {self.workflow.name!r} failed "
                f"with exit code {code}"
                + (f" ({record.reason})" if record.reason else "")
                + f"; log: {record.log_path}"
            )

    def _env(self, node: ExecutorNode, python: str) -> dict[str, str]:
        env = dict(os.environ)
        if python != self.settings.python:
            bindir = str(Path(python).parent)
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
            env["VIRTUAL_ENV"] = str(Path(bindir).parent)
        if self.settings.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.settings.tracking_uri
        if self.settings.registry_uri:
            env["MLFLOW_REGISTRY_URI"] = self.settings.registry_uri
        env.update(
            SCANFLOW_RUN_ID=self.status.run_id,
            SCANFLOW_WORKFLOW=self.workflow.name,
            SCANFLOW_NODE=node.name,
            SCANFLOW_RUN_DIR=str(self.run_dir),
            SCANFLOW_NAMESPACE=self.settings.namespace,
        )
        env.update(node.env)
        return env

    def _finish(self) -> None:
        self.status.finish()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "status.json").write_text(self.status.model_dump_json(indent=2))
