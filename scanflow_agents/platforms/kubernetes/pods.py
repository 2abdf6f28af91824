"""Steps whose pods never start: read from pod status and events, with the reason.

A Job whose pod cannot start does not fail by itself: the pod waits
(an image that cannot be pulled, a Secret that does not exist, no node with
room) or is never created (a quota, an admission policy), and the Job
waits with it until its deadline. This module tells a step that will not
start from one that is starting, so a run fails at once with the reason
instead of hours later with "deadline exceeded".

- A container waiting for a reason that does not heal by itself
  (:data:`FATAL`) fails the step at once.
- A pod that is not scheduled, a Job that gets no pod (events
  ``FailedCreate``), or an image still being pulled fail the step once it has
  waited ``pending_timeout`` seconds: quotas free up and nodes scale up,
  so these get time. A pod refused by Pod Security admission fails at once.
"""

from __future__ import annotations

import time

from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.client import JOBS, PODS, KubeClient, Obj

FATAL = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def waiting(pod: Obj) -> tuple[str, str] | None:
    """The first waiting reason (and its message) of a pod's containers, init ones first."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            state = (container.get("state") or {}).get("waiting") or {}
            if state.get("reason"):
                return str(state["reason"]), str(state.get("message") or "")
    return None


def unscheduled(pod: Obj) -> str | None:
    """Why a pod is not scheduled (its PodScheduled condition), or None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("message") or condition.get("reason") or "not scheduled")
    return None


class PendingWatch:
    """Finds the steps of one run whose pods will not start.

    Args:
        client: The API access.
        namespace: The run's namespace.
        run_label: The run's ``scanflow.io/run`` label value.
        timeout: Seconds a step may wait for its pod before it fails.
    """

    def __init__(self, client: KubeClient, namespace: str, run_label: str, timeout: float) -> None:
        self.client = client
        self.namespace = namespace
        self.run_label = run_label
        self.timeout = timeout
        self._since: dict[str, float] = {}
        self._started: set[str] = set()  # pods seen past Pending: no need to look again

    async def stuck(self, steps: dict[str, str | None]) -> dict[str, str]:
        """Which of ``steps`` (node → its Job's name, None for an Argo step) will not start.

        Returns:
            For each stuck step, the reason (for the run's message).
        """
        steps = {node: job for node, job in steps.items() if node not in self._started}
        if not steps:
            return {}
        pods = await self.client.find(PODS, self.namespace, {naming.RUN: self.run_label})
        now = time.monotonic()
        found: dict[str, str] = {}
        for node, job in steps.items():
            mine = [p for p in pods if naming.matches(p, {naming.NODE: node})]
            started = [p for p in mine if (p.get("status") or {}).get("phase") != "Pending"]
            if started:
                self._started.add(node)
                continue
            since = self._since.setdefault(node, now)
            waited = now - since
            reason = await self._reason(mine, job, waited)
            if reason is not None:
                found[node] = reason
        return found

    async def _reason(self, pods: list[Obj], job: str | None, waited: float) -> str | None:
        return await stuck_reason(self.client, self.namespace, pods, job, waited, self.timeout)


async def stuck_reason(
    client: KubeClient,
    namespace: str,
    pods: list[Obj],
    job: str | None,
    waited: float,
    timeout: float,
) -> str | None:
    """Why the pods of one Job (``pods``; none yet) will not start, or None for now.

    Args:
        client: The API access (events are read when the Job has no pod).
        namespace: The Job's namespace.
        pods: The Job's pods seen so far.
        job: The Job's name; None when there is no Job to read events of (an Argo step).
        waited: Seconds since the Job started waiting for its pod.
        timeout: Seconds after which waiting itself is the reason.
    """
    late = waited >= timeout
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name")
        why = waiting(pod)
        if why is not None and (why[0] in FATAL or late):
            return f"pod {name} cannot start: {why[0]}" + (f": {why[1]}" if why[1] else "")
        not_placed = unscheduled(pod)
        if not_placed is not None and late:
            return f"pod {name} was not scheduled in {waited:.0f} s: {not_placed}"
    if pods or job is None:
        return None
    events = [
        e
        for e in await client.events(namespace, JOBS.kind, job)
        if e.get("reason") == "FailedCreate"
    ]
    if events:
        message = str(events[-1].get("message") or "FailedCreate")
        if "PodSecurity" in message or late:
            return f"Job {job} cannot create its pod: {message}"
    elif late:
        return f"Job {job} created no pod in {waited:.0f} s"
    return None
