"""The run registry every platform shares: start, follow, cancel, finish, resume.

A platform hands the registry a run (anything with a live ``status`` and an
``execute()`` that drives it to the end) and a :class:`RunRecord` that says
how to follow it again. The registry follows it in a guarded task, keeps the
record in a :class:`RunStore` at every start and end, and reports the final
status exactly once to the platform's ``on_run_finished``.

The semantics, the same on every platform:

- **Cancelled** (``cancel``, which ``delete`` uses): the run ends as
  ``cancelled`` and its end **is reported**: whoever waits for the run's
  event learns it will not succeed.
- **Closed** (``close``, the planner stopping): the platform stops
  following. Nothing is reported now; the store keeps the run unreported, and
  a platform opened later on the same store (``resume``) follows it again
  where the run still lives (a cluster), or reports how it ended where it
  could not outlive the process (local child processes), so a restarted
  planner still sends every run's end event.

The store is given, not made here: the platform is an adapter and does not
know the transport. :class:`MemoryRunStore` keeps records for the life of
the process; the planner passes one backed by JetStream key-value.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from scanflow_agents._kit.tasks import guarded, stop
from scanflow_agents.platforms.results import PlatformError, RunStatus
from scanflow_agents.workflows import Workflow

logger = logging.getLogger(__name__)

RunCallback = Callable[[RunStatus], Awaitable[None] | None]
"""What a platform calls with the final status of every run (sync or async)."""


class RunRecord(BaseModel):
    """What a store keeps of one run: its status, and enough to follow it again.

    ``details`` belongs to the platform that started the run (the images of
    its steps, whether it is an Argo Workflow...); ``reported`` says whether
    its end was handed to ``on_run_finished``.
    """

    status: RunStatus
    platform: str
    workflow: dict[str, Any]
    base_dir: str | None = None
    team: str | None = None
    application: str | None = None
    parameters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    reported: bool = False

    @classmethod
    def of(cls, status: RunStatus, platform: str, workflow: Workflow, **fields: Any) -> RunRecord:
        """A record of ``status`` for ``workflow`` (its definition and folder kept)."""
        return cls(
            status=status,
            platform=platform,
            workflow=workflow.model_dump(mode="json"),
            base_dir=None if workflow.base_dir is None else str(workflow.base_dir),
            **fields,
        )

    def load_workflow(self) -> Workflow:
        """The workflow the run was started for, with its script folder."""
        workflow = Workflow.model_validate(self.workflow)
        if self.base_dir is not None:
            workflow = workflow.model_copy(update={"base_dir": Path(self.base_dir)})
        return workflow


@runtime_checkable
class RunStore(Protocol):
    """Where run records outlive the process that started the runs."""

    async def put(self, record: RunRecord) -> None:
        """Keep ``record`` (replacing the earlier one of its run)."""
        ...

    async def get(self, run_id: str) -> RunRecord | None:
        """The record of a run, or None."""
        ...

    async def unreported(self, platform: str) -> list[RunRecord]:
        """Records of ``platform`` whose end was not reported yet (running or ended)."""
        ...


class MemoryRunStore:
    """A :class:`RunStore` in this process's memory (lost with it); for one process and tests.

    Args:
        kept: Reported records kept at most (the oldest go first).
    """

    def __init__(self, kept: int = 1000) -> None:
        self.kept = kept
        self.records: OrderedDict[str, RunRecord] = OrderedDict()

    async def put(self, record: RunRecord) -> None:
        """Keep a copy of ``record``."""
        self.records[record.status.run_id] = record.model_copy(deep=True)
        self.records.move_to_end(record.status.run_id)
        for run_id in [r for r, rec in self.records.items() if rec.reported]:
            if len(self.records) <= self.kept:
                break
            del self.records[run_id]

    async def get(self, run_id: str) -> RunRecord | None:
        """A copy of the record of ``run_id``."""
        found = self.records.get(run_id)
        return None if found is None else found.model_copy(deep=True)

    async def unreported(self, platform: str) -> list[RunRecord]:
        """Copies of the unreported records of ``platform``, oldest first."""
        return [
            r.model_copy(deep=True)
            for r in self.records.values()
            if r.platform == platform and not r.reported
        ]


class Run(Protocol):
    """A run as the registry follows it."""

    status: RunStatus

    async def execute(self) -> RunStatus:
        """Drive the run to its end; on cancellation mark it cancelled and re-raise."""
        ...


class RunRegistry:
    """The runs one platform instance follows.

    Args:
        platform: The platform's name, kept in records (``local``, ``kubernetes``).
        store: Where records go; a :class:`MemoryRunStore` if None.
        kept: Finished runs remembered in memory for ``status``.
        on_finished: Called with the final status of every run.
    """

    def __init__(
        self,
        platform: str,
        *,
        store: RunStore | None = None,
        kept: int = 100,
        on_finished: RunCallback | None = None,
    ) -> None:
        self.platform = platform
        self.store: RunStore = store if store is not None else MemoryRunStore()
        self.kept = kept
        self.on_finished = on_finished
        self._runs: OrderedDict[str, tuple[Run, RunRecord]] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    async def known(self, run_id: str) -> bool:
        """Whether this instance follows ``run_id`` or the store has a record of it."""
        return run_id in self._runs or await self.store.get(run_id) is not None

    async def start(self, run: Run, record: RunRecord) -> None:
        """Keep the record, then follow ``run`` in the background until it ends."""
        run_id = run.status.run_id
        record.status = run.status
        self._runs[run_id] = (run, record)
        await self.store.put(record)
        self._tasks[run_id] = guarded(
            self._follow(run, record), name=f"run {run_id}", logger=logger
        )
        done = [r for r, (found, _) in self._runs.items() if found.status.done]
        while len(self._runs) > self.kept and done:
            self._runs.pop(done.pop(0))

    async def status(self, run_id: str) -> RunStatus:
        """A copy of a run's status, from memory or else from the store.

        Raises:
            PlatformError: ``not_found`` if neither knows the run.
        """
        if run_id in self._runs:
            return self._runs[run_id][0].status.model_copy(deep=True)
        record = await self.store.get(run_id)
        if record is None or record.platform != self.platform:
            raise PlatformError("not_found", f"no run {run_id!r} on the {self.platform} platform")
        return record.status

    def statuses(self, workflow: str) -> list[RunStatus]:
        """Copies of the statuses of the runs of ``workflow`` this instance follows."""
        return [
            run.status.model_copy(deep=True)
            for run, _ in self._runs.values()
            if run.status.workflow == workflow
        ]

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """Wait for a run to end and return its final status.

        Raises:
            TimeoutError: The run did not end within ``timeout`` seconds.
            PlatformError: ``not_found`` for a run nobody knows.
        """
        task = self._tasks.get(run_id)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                raise TimeoutError(f"run {run_id} did not end within {timeout} s")
        return await self.status(run_id)

    async def cancel(self, workflow: str) -> list[str]:
        """Cancel the unfinished runs of ``workflow``; their ends are reported.

        Returns:
            The ids of the runs cancelled.
        """
        doomed = [
            r
            for r, (run, _) in self._runs.items()
            if run.status.workflow == workflow and not run.status.done
        ]
        for run_id in doomed:
            await stop(self._tasks.pop(run_id, None))
            run, record = self._runs[run_id]
            if not run.status.done:  # Cancelled before it even started executing.
                run.status.state, run.status.message = "cancelled", "run cancelled"
                run.status.finish()
            await self._report(record)
        return doomed

    async def close(self, *, outlives: bool) -> None:
        """Stop following every run; nothing is reported (see the module's docstring).

        Args:
            outlives: Whether runs go on without this process (a cluster's): then
                their records stay as they were; otherwise the ended status
                ("cancelled" by the close) is kept, unreported, for ``resume``.
        """
        tasks, self._tasks = self._tasks, {}
        for run_id, task in tasks.items():
            await stop(task)
            run, record = self._runs[run_id]
            if not outlives:
                run.status.message = f"{run.status.message}; the platform closed while it ran"
                record.status = run.status
                await self._save(record)

    async def unreported(self) -> list[RunRecord]:
        """The store's unreported records of this platform that this instance does not follow."""
        return [
            r for r in await self.store.unreported(self.platform) if r.status.run_id not in self
        ]

    async def adopt(self, record: RunRecord) -> None:
        """Report a run that ended while no instance followed it."""
        self._runs[record.status.run_id] = (_Ended(record.status), record)
        await self._report(record)

    async def checkpoint(self, run_id: str) -> None:
        """Store a run's current status (a platform calls it when a step changes state)."""
        if run_id in self._runs:
            run, record = self._runs[run_id]
            record.status = run.status
            await self._save(record)

    async def _follow(self, run: Run, record: RunRecord) -> None:
        await run.execute()  # Cancellation propagates: cancel() and close() decide what follows.
        await self._report(record)

    async def _report(self, record: RunRecord) -> None:
        status = record.status
        logger.info("run %s of workflow %s: %s", status.run_id, status.workflow, status.message)
        if self.on_finished is not None:
            try:
                result = self.on_finished(status.model_copy(deep=True))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("run %s: the completion callback failed", status.run_id)
        record.reported = True
        await self._save(record)

    async def _save(self, record: RunRecord) -> None:
        # The store may be remote (JetStream): a failure there must not lose the run
        # here; the record is written again at the run's next change.
        try:
            await self.store.put(record)
        except Exception as exc:
            logger.warning("run %s: its record was not stored: %s", record.status.run_id, exc)


class _Ended:
    """A run that is already over (adopted from the store to be reported)."""

    def __init__(self, status: RunStatus) -> None:
        self.status = status

    async def execute(self) -> RunStatus:
        return self.status
