"""The step scheduling every platform follows: which steps of a run may start now."""

from __future__ import annotations

from scanflow_agents.platforms.results import NodeRun, NodeState, RunStatus
from scanflow_agents.platforms.scheduling import ready
from scanflow_agents.workflows import ExecutorNode, ServiceNode, Workflow

# prepare → (fit, report); fit → evaluate; report → evaluate; publish stands alone.
DIAMOND = Workflow(
    name="retrain",
    nodes=tuple(
        ExecutorNode(name=name, entry_point=f"{name}.py")
        for name in ("evaluate", "report", "fit", "prepare", "publish")
    ),
    edges=(("prepare", "fit"), ("prepare", "report"), ("fit", "evaluate"), ("report", "evaluate")),
)


def status(workflow: Workflow, **states: NodeState) -> RunStatus:
    return RunStatus(
        run_id="r1",
        workflow=workflow.name,
        state="running",
        nodes={
            n.name: NodeRun(node=n.name, state=states.get(n.name, "pending"))
            for n in workflow.executors
        },
    )


def test_a_new_run_starts_the_steps_that_wait_for_nothing_in_dependency_order() -> None:
    assert ready(DIAMOND, status(DIAMOND)) == ["prepare", "publish"]


def test_a_step_waits_for_every_step_it_depends_on() -> None:
    # Ties keep the order the nodes were declared in: report before fit.
    assert ready(DIAMOND, status(DIAMOND, prepare="succeeded", publish="running")) == [
        "report",
        "fit",
    ]
    half = status(DIAMOND, prepare="succeeded", fit="succeeded", report="running")
    assert ready(DIAMOND, half) == ["publish"]
    both = status(DIAMOND, prepare="succeeded", fit="succeeded", report="succeeded")
    assert ready(DIAMOND, both) == ["evaluate", "publish"]


def test_steps_being_started_or_running_or_ended_are_not_ready_again() -> None:
    run = status(DIAMOND, prepare="succeeded")
    assert ready(DIAMOND, run, started={"fit", "publish"}) == ["report"]
    run = status(DIAMOND, prepare="succeeded", fit="running", report="skipped", publish="cancelled")
    assert ready(DIAMOND, run) == []


def test_nothing_new_starts_once_a_step_failed() -> None:
    run = status(DIAMOND, prepare="succeeded", fit="failed")
    run.failed_node = "fit"
    # report and publish depend on nothing that failed, and still do not start.
    assert ready(DIAMOND, run) == []


def test_a_skipped_or_failed_dependency_never_lets_a_step_start() -> None:
    # A failure not (yet) named in failed_node: the step still waits.
    assert "fit" not in ready(DIAMOND, status(DIAMOND, prepare="failed"))
    assert "fit" not in ready(DIAMOND, status(DIAMOND, prepare="skipped"))


def test_a_dependency_on_a_node_that_is_no_step_of_the_run_is_ignored() -> None:
    online = Workflow(
        name="serve",
        kind="online",
        nodes=(
            ServiceNode(name="model", model_uri="models:/digits@production"),
            ExecutorNode(name="warm", entry_point="warm.py"),
        ),
        edges=(("model", "warm"),),
    )
    assert ready(online, status(online)) == ["warm"]
