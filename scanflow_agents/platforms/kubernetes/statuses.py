"""What a workflow's services look like on the cluster, read from Deployments and pods."""

from __future__ import annotations

import datetime

from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.client import Obj
from scanflow_agents.platforms.kubernetes.rollouts import observed, rollout_state
from scanflow_agents.platforms.results import ReplicaStatus, ServiceStatus
from scanflow_agents.workflows import ServiceNode


def service_status(namespace: str, deployment: Obj, pods: list[Obj]) -> ServiceStatus:
    """A service node's status: what its ready pods serve, and how its rollout goes.

    The Deployment's annotation says which model was asked for; while a
    rollout is not complete, the model served is read from the ready pods
    (each carries its model in an annotation), so a rollout stuck on a model
    that will not load reports the old model still serving. Ready replicas
    come from the Deployment's status only once it describes the current
    spec (observedGeneration), else from the pods.
    """
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    node = meta["labels"][naming.NODE]
    mine = [p for p in pods if (p.get("metadata") or {}).get("labels", {}).get(naming.NODE) == node]
    replicas = [replica(p) for p in mine]
    spec_json = naming.annotations_of(deployment).get(naming.SPEC)
    port = (ServiceNode.model_validate_json(spec_json).port if spec_json else None) or 80
    desired = naming.annotations_of(deployment).get(naming.MODEL_URI, "")
    state, why = rollout_state(deployment)
    serving = sorted({r.model_uri for r in replicas if r.ready and r.model_uri})
    served = desired if state == "complete" or not replicas else ", ".join(serving)
    status = deployment.get("status") or {}
    ready = (
        int(status.get("readyReplicas") or 0)
        if observed(deployment) and "readyReplicas" in status
        else sum(r.ready for r in replicas)
    )
    return ServiceStatus(
        workflow=meta["labels"][naming.WORKFLOW],
        node=node,
        url=f"http://{meta['name']}.{namespace}.svc" + ("" if port == 80 else f":{port}"),
        model_uri=served,
        desired_model_uri=desired,
        desired_replicas=int(spec.get("replicas") or 0),
        ready_replicas=ready,
        replicas=replicas,
        rollout=state,
        rollout_message=why,
    )


def replica(pod: Obj) -> ReplicaStatus:
    """One pod as a replica: alive when running, ready when its Ready condition holds."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    started = status.get("startTime")
    return ReplicaStatus(
        replica=meta.get("name", "?"),
        pid=None,
        model_uri=((meta.get("annotations") or {}).get(naming.MODEL_URI)) or "",
        alive=status.get("phase") == "Running",
        ready=ready,
        started_at=datetime.datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
        if started
        else None,
    )
