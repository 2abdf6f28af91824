"""The retraining of each supervised workflow: a typed state machine with deadlines.

A workflow is idle (no entry), or in one of two states, each with a deadline::

    idle ──finding──▶ Gathering ──rows there, or its deadline──▶ Gathering(ready)
                          │                                           │ plan carried out
                          └──────────── plan failed or rejected ──────┤
                                                                      ▼
    idle ◀──run ended (judged), or its deadline (timed out)────── Running

- ``Gathering``: waiting for labelled rows since the drift began, at most until
  its deadline (then it trains on what there is). ``ready`` once they are there:
  the plan is being made, or waits for approval.
- ``Running``: the planner's run is in flight. ``run_id`` is ``None`` until the
  planner's ``run`` answers, or until the run's end event came first (a fast run
  can end before ``run`` returns). Past its deadline it times out, so a lost end
  event or a hung run does not block retraining for ever.

Findings that arrive while a workflow is not idle are kept on its state
(``noted``), so the decision that ends the state says what was seen meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents import clocks


@dataclass
class Gathering:
    """Waiting for labelled rows since ``since`` before retraining."""

    finding: str
    kind: str
    since: float | None
    evidence: dict[str, Any]
    deadline: float
    ready: bool = False
    noted: list[str] = field(default_factory=list)


@dataclass
class Running:
    """A retraining run in flight."""

    started: float
    deadline: float
    run_id: str | None = None
    dataset: dict[str, Any] | None = None
    noted: list[str] = field(default_factory=list)


State = Gathering | Running


class Retrainings:
    """The retraining state of every supervised workflow.

    Args:
        run_timeout: Seconds a run may be in flight before it times out.
        clock: Monotonic seconds (a test gives its own).
    """

    def __init__(self, run_timeout: float, clock: Callable[[], float] = clocks.now) -> None:
        self.run_timeout = run_timeout
        self.clock = clock
        self.states: dict[str, State] = {}
        self.runs: dict[str, str] = {}  # planner run id -> workflow
        # Runs judged already: `run` may answer after the run's end event was handled.
        self.ended: deque[str] = deque(maxlen=100)
        self.last_end: dict[str, float] = {}

    def state(self, workflow: str) -> State | None:
        """The workflow's state; ``None`` when idle."""
        return self.states.get(workflow)

    def cooling(self, workflow: str, cooldown: float) -> float:
        """Seconds left before a retraining of ``workflow`` may start again (0: none)."""
        end = self.last_end.get(workflow)
        return 0.0 if end is None else max(0.0, end + cooldown - self.clock())

    def gather(
        self,
        workflow: str,
        *,
        finding: str,
        kind: str,
        since: float | None,
        evidence: dict[str, Any],
        wait: float,
    ) -> Gathering:
        """Enter ``Gathering`` (from idle) for at most ``wait`` seconds."""
        state = Gathering(finding, kind, since, evidence, deadline=self.clock() + wait)
        self.states[workflow] = state
        return state

    def gathering(self) -> list[tuple[str, Gathering]]:
        """The workflows still waiting for rows (not yet ready)."""
        return [
            (workflow, state)
            for workflow, state in self.states.items()
            if isinstance(state, Gathering) and not state.ready
        ]

    def overdue(self, state: Gathering) -> bool:
        """Whether a gathering's wait is over."""
        return self.clock() >= state.deadline

    def start(self, workflow: str) -> Running:
        """Enter ``Running`` (the planner is being asked to run the training)."""
        previous = self.states.get(workflow)
        now = self.clock()
        state = Running(started=now, deadline=now + self.run_timeout)
        if previous is not None:
            state.noted = list(previous.noted)
        self.states[workflow] = state
        return state

    def started(self, workflow: str, run_id: str, dataset: dict[str, Any]) -> bool:
        """Record the planner's run id; ``False`` if that run was judged already."""
        if run_id in self.ended:
            return False
        state = self.states.get(workflow)
        if isinstance(state, Running):
            state.run_id = state.run_id or run_id
            state.dataset = dataset
        self.runs[run_id] = workflow
        return True

    def of_run(self, run_id: str, trains: Callable[[str], bool]) -> str | None:
        """The supervised workflow whose retraining run ``run_id`` is, if it is one of ours.

        By run id once the planner answered; otherwise by training workflow (at
        most one retraining per supervised workflow is in flight, so that is
        unambiguous): ``trains(workflow)`` says whether the run's workflow is the
        one that retrains ``workflow``.
        """
        if run_id in self.runs:
            return self.runs.pop(run_id)
        for workflow, state in self.states.items():
            if isinstance(state, Running) and state.run_id is None and trains(workflow):
                state.run_id = run_id  # so the answer of `run`, when it comes, is not kept
                return workflow
        return None

    def end(self, workflow: str, run_id: str) -> State | None:
        """Leave ``Running`` for idle: the run ended; returns the state it was in."""
        self.ended.append(run_id)
        self.last_end[workflow] = self.clock()
        return self.states.pop(workflow, None)

    def drop(self, workflow: str) -> State | None:
        """Back to idle without a run (the plan failed, was rejected or expired)."""
        return self.states.pop(workflow, None)

    def timed_out(self) -> list[tuple[str, Running]]:
        """Runs past their deadline, now forgotten (their workflows idle again)."""
        now = self.clock()
        out = [
            (workflow, state)
            for workflow, state in self.states.items()
            if isinstance(state, Running) and now >= state.deadline
        ]
        for workflow, state in out:
            del self.states[workflow]
            self.last_end[workflow] = now
            if state.run_id is not None:
                self.runs.pop(state.run_id, None)
                self.ended.append(state.run_id)  # its end event, if it ever comes, is not judged
        return out

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each busy workflow's state, for the improver's ``retrainings`` actuator."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        for workflow, state in self.states.items():
            common = {"deadline_in_s": round(state.deadline - now, 1), "noted": state.noted}
            if isinstance(state, Gathering):
                out[workflow] = {"state": "ready" if state.ready else "gathering", **common}
            else:
                out[workflow] = {
                    "state": "running",
                    "run_id": state.run_id,
                    "running_s": round(now - state.started, 1),
                    **common,
                }
        return out
