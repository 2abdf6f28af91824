"""The contract every platform keeps (local processes, Kubernetes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from scanflow_agents.platforms.results import (
    ActionResult,
    BuildResult,
    DeployResult,
    RunStatus,
    WorkflowStatus,
)
from scanflow_agents.platforms.runs import RunCallback
from scanflow_agents.workflows import Application, Workflow

__all__ = ["CALL_FUNCTION", "Platform", "RunCallback"]

# Runs "module:function" entry points on every platform: imports the function and
# calls it with the --name value options as keyword arguments (JSON values
# decoded). Inline with `python -c`, so a node's image needs only the user's code.
CALL_FUNCTION = """
import asyncio, importlib, inspect, json, sys
target, args = sys.argv[1], sys.argv[2:]
module, _, name = target.partition(":")
kwargs = {}
for key, value in zip(args[::2], args[1::2]):
    try:
        kwargs[key.lstrip("-").replace("-", "_")] = json.loads(value)
    except ValueError:
        kwargs[key.lstrip("-").replace("-", "_")] = value
result = getattr(importlib.import_module(module), name)(**kwargs)
if inspect.isawaitable(result):
    asyncio.run(result)
"""


@runtime_checkable
class Platform(Protocol):
    """Where workflows are built, deployed and run.

    Every method is idempotent: calling it again with the same arguments
    changes nothing and says so (``outcome="unchanged"``). Asking about a
    workflow, node or run the platform does not know raises
    :class:`~scanflow_agents.platforms.results.PlatformError` with code
    ``not_found``.

    ``team`` names whose namespace a call acts in (the application's team);
    a platform with one namespace (local) accepts it and has nothing to
    choose. Runs are kept in the :class:`~scanflow_agents.platforms.runs.RunStore`
    the platform was given; ``resume`` picks up what an earlier instance left.
    """

    async def build(
        self, target: Application | Workflow, *, team: str | None = None
    ) -> BuildResult:
        """Prepare every node's environment (venv, image) from its requirements."""
        ...

    async def deploy(self, workflow: Workflow, *, team: str | None = None) -> DeployResult:
        """Make the workflow's services run as declared (model, replicas)."""
        ...

    async def run(
        self,
        workflow: Workflow,
        *,
        run_id: str | None = None,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        team: str | None = None,
    ) -> str:
        """Start a batch run and return its id at once.

        Args:
            workflow: The workflow whose executors run, in dependency order.
            run_id: An id chosen by the caller; a second call with the same id
                starts nothing and returns it again.
            parameters: Per node, parameters that override the declared ones.
            team: Whose namespace the run goes to.
        """
        ...

    async def run_status(self, run_id: str) -> RunStatus:
        """The state of a run and of each of its nodes."""
        ...

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """Wait for a run to end and return its final status.

        Raises:
            TimeoutError: The run did not end within ``timeout`` seconds.
        """
        ...

    async def scale(
        self, workflow: str, node: str, replicas: int, *, team: str | None = None
    ) -> ActionResult:
        """Run ``replicas`` replicas of a service node."""
        ...

    async def redeploy(
        self, workflow: str, node: str, model_uri: str, *, team: str | None = None
    ) -> ActionResult:
        """Roll a service node's replicas to another model, without downtime.

        Answers ``updated`` once the new replicas serve; ``failed`` (with
        ``details.rolled_back``) when they never became ready and the old model
        serves again.
        """
        ...

    async def status(self, workflow: str, *, team: str | None = None) -> WorkflowStatus:
        """What runs of the workflow, and how it is doing."""
        ...

    async def delete(self, workflow: str, *, team: str | None = None) -> ActionResult:
        """Stop the workflow's services and cancel its runs (their ends are reported)."""
        ...

    async def resume(self) -> list[str]:
        """Follow again the runs the store holds unreported; returns their ids.

        Runs that could not outlive the instance that started them are
        reported as they ended; runs that live on (a cluster's) are followed.
        """
        ...

    async def close(self) -> None:
        """Stop following runs and release connections; safe to call twice."""
        ...
