"""Which steps of a batch run may start now: one rule for every platform.

A step starts once every step it depends on has succeeded; steps that do not
depend on each other start together. Once a step has failed nothing new
starts: the steps already running finish, and the ones still waiting are
marked ``skipped`` when the run ends (:meth:`RunStatus.finish`).

The local platform asks after each step ends, with the steps it has handed
to a task but that have not marked themselves running yet; the Kubernetes
platform asks at every poll, after reading the state of its Jobs.
"""

from __future__ import annotations

from collections.abc import Collection

from scanflow_agents.platforms.results import RunStatus
from scanflow_agents.workflows import Workflow


def ready(workflow: Workflow, status: RunStatus, started: Collection[str] = ()) -> list[str]:
    """The steps of a run that may start now, in the workflow's dependency order.

    Args:
        workflow: The workflow the run is of.
        status: The run's live status; its nodes are the run's steps (a
            dependency on a node that is not a step, a service, is no
            dependency of the run).
        started: Steps already being started whose state still says ``pending``.

    Returns:
        The pending steps whose dependencies all succeeded; none once a step failed.
    """
    if status.failed_node is not None:
        return []
    steps = status.nodes
    return [
        name
        for name in workflow.topological_order()
        if name in steps
        and steps[name].state == "pending"
        and name not in started
        and all(
            steps[before].state == "succeeded"
            for before in workflow.dependencies(name)
            if before in steps
        )
    ]
