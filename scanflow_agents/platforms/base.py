"""The contract every platform keeps (local processes, Kubernetes), and its shared life cycle."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from scanflow_agents.platforms.results import (
    ActionResult,
    BuildResult,
    DeployResult,
    PlatformError,
    RunStatus,
    WorkflowStatus,
)
from scanflow_agents.platforms.runs import RunCallback, RunRecord, RunRegistry, RunStore
from scanflow_agents.workflows import Application, Workflow

__all__ = [
    "CALL_FUNCTION",
    "Platform",
    "PlatformBase",
    "RunCallback",
    "check_deployable",
    "check_parameters",
]

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

    async def preflight(self) -> list[str]:
        """What the platform lacks to act, each with the command that fixes it; empty: nothing."""
        ...

    async def close(self) -> None:
        """Stop following runs and release connections; safe to call twice."""
        ...


class PlatformBase:
    """The life cycle every platform shares: its runs, from start to ``resume``.

    A platform opens as an async context manager and closes once (``close``
    is idempotent); its :class:`~scanflow_agents.platforms.runs.RunRegistry`
    follows the runs it starts, reports each end to ``on_run_finished``, and
    keeps records for a later instance's ``resume``. What differs between
    platforms is said by a subclass:

    - ``name``: the platform's name in run records;
    - ``outlives``: whether its runs go on without the process (a cluster's)
      or stop with it (child processes);
    - ``_release()``: what else ``close`` lets go of (services, a connection);
    - ``_pick_up(record)``: what ``resume`` does with a run an earlier
      instance left unfinished (follow it again, or report it lost).

    Args:
        kept_runs: Finished runs remembered in memory for ``status``.
        on_run_finished: Called with the final status of every run.
        store: Where run records are kept (default: in memory).
    """

    name: ClassVar[str]
    outlives: ClassVar[bool]

    def __init__(
        self,
        *,
        kept_runs: int,
        on_run_finished: RunCallback | None = None,
        store: RunStore | None = None,
    ) -> None:
        self.runs = RunRegistry(self.name, store=store, kept=kept_runs, on_finished=on_run_finished)

    @property
    def on_run_finished(self) -> RunCallback | None:
        """Called with the final status of every run."""
        return self.runs.on_finished

    @on_run_finished.setter
    def on_run_finished(self, callback: RunCallback | None) -> None:
        self.runs.on_finished = callback

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop following runs, then release what the platform holds; idempotent.

        Runs that outlive the process go on and are left as they are in the
        store; the others are stopped and kept, ended and unreported, for
        ``resume``.
        """
        await self.runs.close(outlives=self.outlives)
        await self._release()

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """Wait for a run to end and return its final status (TimeoutError if it does not)."""
        return await self.runs.wait(run_id, timeout)

    async def run_status(self, run_id: str) -> RunStatus:
        """A copy of the run's current status (from the run store for earlier instances')."""
        return await self.runs.status(run_id)

    async def resume(self) -> list[str]:
        """Take over the runs an earlier instance left unreported; returns their ids.

        A run that had ended is reported as it ended; one that had not is
        handed to the platform (``_pick_up``).
        """
        found = []
        for record in await self.runs.unreported():
            if record.status.done:
                await self.runs.adopt(record)
            else:
                await self._pick_up(record)
            found.append(record.status.run_id)
        return found

    async def preflight(self) -> list[str]:
        """What the platform lacks to act; a platform with nothing outside it lacks nothing."""
        return []

    async def _release(self) -> None:
        """Let go of what the platform holds besides its runs (on ``close``)."""

    async def _pick_up(self, record: RunRecord) -> None:
        """Follow again, or report, a run an earlier instance left unfinished."""
        raise NotImplementedError


def check_deployable(workflow: Workflow) -> None:
    """Refuse to deploy a batch workflow (its nodes run, they do not serve).

    Raises:
        PlatformError: ``invalid``.
    """
    if workflow.kind != "online":
        raise PlatformError(
            "invalid",
            f"workflow {workflow.name!r} is a batch workflow; run it instead of deploying it",
        )


def check_parameters(
    workflow: Workflow, parameters: Mapping[str, Mapping[str, Any]] | None
) -> None:
    """Refuse parameters for nodes that are not executors of ``workflow``.

    Raises:
        PlatformError: ``invalid``, naming the unknown nodes.
    """
    unknown = set(parameters or {}) - {n.name for n in workflow.executors}
    if unknown:
        raise PlatformError(
            "invalid",
            f"parameters for unknown executor(s) {sorted(unknown)} of workflow {workflow.name!r}",
        )
