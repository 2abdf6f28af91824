"""Whether a Deployment's rollout is done, going, or failed; waiting for it.

A Deployment's status counts are the controller's view of *some* spec: only
once ``status.observedGeneration`` reaches ``metadata.generation`` do they
describe the spec we wrote. Then the rollout is complete when every replica
runs the new template (``updatedReplicas``), none of the old ones is left
(``replicas``) and all are available; it failed when the controller gave up
(the ``Progressing`` condition is False with reason ``ProgressDeadlineExceeded``,
after the Deployment's ``progressDeadlineSeconds``).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Literal

from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.client import DEPLOYMENTS, KubeClient, Obj
from scanflow_agents.platforms.kubernetes.deploying import ownership_test, pointer
from scanflow_agents.platforms.kubernetes.manifests import service_deployment
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
from scanflow_agents.platforms.results import ActionResult, PlatformError, action_result
from scanflow_agents.workflows import ServiceNode

RolloutState = Literal["complete", "progressing", "failed"]


def observed(deployment: Obj, newer_than: int | None = None) -> bool:
    """Whether the status describes the current spec (observedGeneration caught up).

    Args:
        newer_than: A generation the status must have moved past (the one
            before our change), whatever ``metadata.generation`` says.
    """
    generation = (deployment.get("metadata") or {}).get("generation")
    seen = (deployment.get("status") or {}).get("observedGeneration")
    if newer_than is not None and (seen is None or int(seen) <= newer_than):
        return False
    return generation is None or (seen is not None and int(seen) >= int(generation))


def rollout_state(deployment: Obj, newer_than: int | None = None) -> tuple[RolloutState, str]:
    """The state of a Deployment's latest rollout, and a sentence saying why."""
    if not observed(deployment, newer_than):
        return "progressing", "the controller has not acted on the latest change yet"
    status = deployment.get("status") or {}
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return "failed", str(condition.get("message") or "progress deadline exceeded")
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return "progressing", f"{updated} of {wanted} replica(s) updated"
    if total > updated:
        return "progressing", f"{total - updated} old replica(s) still terminating"
    if available < wanted:
        return "progressing", f"{available} of {wanted} updated replica(s) available"
    return "complete", f"{wanted} replica(s) updated and available"


async def wait_rollout(
    client: KubeClient,
    namespace: str,
    name: str,
    *,
    deadline: float,
    poll: float,
    newer_than: int | None = None,
) -> tuple[RolloutState, str]:
    """Follow a rollout until it completes or fails; failed too after ``deadline`` seconds.

    The controller's own deadline (``progressDeadlineSeconds``) counts from
    the last progress; ours bounds the whole wait, so a controller that
    never answers cannot make a redeploy hang.
    """
    ends = time.monotonic() + deadline
    while True:
        current = await client.get(DEPLOYMENTS, namespace, name)
        if current is None:
            return "failed", f"Deployment {namespace}/{name} disappeared during the rollout"
        state, why = rollout_state(current, newer_than)
        if state != "progressing":
            return state, why
        if time.monotonic() > ends:
            return "failed", f"not complete after {deadline:.0f} s: {why}"
        await asyncio.sleep(poll)


async def roll(
    client: KubeClient,
    settings: KubernetesPlatformSettings,
    namespace: str,
    current: Obj,
    model_uri: str,
    force: bool = False,
) -> ActionResult:
    """Roll a service's Deployment to ``model_uri``, wait, and roll back if it fails.

    The new template is rendered from the node definition kept in the
    Deployment's annotation (with the new model); the old template and
    annotations are kept to be put back as they were, which makes the
    controller scale the old ReplicaSet up again.
    """
    labels = current["metadata"]["labels"]
    workflow, node, name = labels[naming.WORKFLOW], labels[naming.NODE], current["metadata"]["name"]
    notes = naming.annotations_of(current)
    previous = notes.get(naming.MODEL_URI)
    if previous == model_uri and not force:
        return action_result(
            "redeploy",
            workflow,
            node,
            "unchanged",
            f"already serving {model_uri}",
            model_uri=model_uri,
        )
    spec = notes.get(naming.SPEC)
    if spec is None:
        raise PlatformError(
            "failed", f"{naming.describe(current)} has no {naming.SPEC} annotation to re-render"
        )
    declared = ServiceNode.model_validate_json(spec).model_copy(update={"model_uri": model_uri})
    desired = service_deployment(
        settings, labels[naming.TEAM], workflow, declared, labels.get(naming.APPLICATION)
    )
    template = desired["spec"]["template"]
    # Microseconds: two forced redeploys in one second must still differ, or the
    # second patch changes no spec, bumps no generation, and starts no rollout.
    stamp = datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="microseconds")
    template["metadata"]["annotations"][naming.RESTARTED_AT] = stamp
    before = (current.get("metadata") or {}).get("generation")
    await _put(client, namespace, name, template, desired["metadata"]["annotations"])
    where = f"{namespace}/{name}"
    state, why = await wait_rollout(
        client,
        namespace,
        name,
        # The controller's deadline counts from the last progress: give it room.
        deadline=settings.rollout_deadline * 1.5,
        poll=settings.poll_interval,
        newer_than=before,
    )
    if state == "complete":
        return action_result(
            "redeploy",
            workflow,
            node,
            "updated",
            f"rolled {where} from {previous} to {model_uri}: {why}",
            previous=previous,
            model_uri=model_uri,
            restarted_at=stamp,
        )
    # The new pods never became ready: the old template goes back, so the
    # old model keeps (or again starts) serving.
    await _put(client, namespace, name, current["spec"]["template"], notes)
    return action_result(
        "redeploy",
        workflow,
        node,
        "failed",
        f"rollout of {where} to {model_uri} failed ({why}); rolled back to {previous}",
        previous=previous,
        model_uri=model_uri,
        rolled_back=True,
        reason=why,
    )


async def _put(
    client: KubeClient, namespace: str, name: str, template: Obj, annotations: dict[str, str]
) -> Obj:
    ops: list[Obj] = [
        ownership_test(),
        {"op": "replace", "path": pointer("spec", "template"), "value": template},
    ]
    for key, value in annotations.items():
        ops.append({"op": "add", "path": pointer("metadata", "annotations", key), "value": value})
    return await client.patch(DEPLOYMENTS, namespace, name, ops, kind="json")
