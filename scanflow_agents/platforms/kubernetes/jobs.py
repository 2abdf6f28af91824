"""Objects for batch runs: a Job per executor, or one Argo Workflow with a DAG.

Pure functions of a :class:`RunContext`; the image of each executor is
decided by the caller (see :mod:`scanflow_agents.platforms.kubernetes.building`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from scanflow_agents.platforms.base import CALL_FUNCTION
from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.client import ARGO_WORKFLOWS, JOBS, Obj
from scanflow_agents.platforms.kubernetes.manifests import (
    common_env,
    env_list,
    harden,
    pod_security,
    pod_spec,
    resources,
)
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
from scanflow_agents.platforms.results import NodeState
from scanflow_agents.workflows import ExecutorNode, Workflow

APP_DIR = PurePosixPath("/app")  # where built images keep a workflow's scripts
RUN_DIR = PurePosixPath("/scanflow/run")  # SCANFLOW_RUN_DIR in every step's pod
RUN_DIR_VOLUME = "run-dir"
STEP_CONTAINER = "step"
SYNC_MODULE = "scanflow_agents.platforms.rundirs"


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What every object of one batch run is built from.

    Args:
        settings: Platform settings (namespace, images, deadlines...).
        team: Whose namespace the run goes to.
        workflow: The workflow; its executors are the steps.
        run_id: The run's id (also in every object's labels).
        images: The image of every executor.
        parameters: Per step, parameters overriding the declared ones.
        application: The application label, when known.
    """

    settings: KubernetesPlatformSettings
    team: str
    workflow: Workflow
    run_id: str
    images: Mapping[str, str]
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    application: str | None = None

    @property
    def namespace(self) -> str:
        """The namespace of the run's objects."""
        return self.settings.namespace(self.team)

    def labels(self, component: str, node: str | None = None) -> dict[str, str]:
        """The labels of one of the run's objects (of one step's, with ``node``)."""
        return naming.labels(
            self.team,
            application=self.application,
            workflow=self.workflow.name,
            node=node,
            component=component,
            run=self.run_id,
        )


def job_name(run_id: str, node: str) -> str:
    """The name of one step's Job in a run (stable: a repeated run id adopts it)."""
    return naming.object_name(run_id, node)


def argo_name(run_id: str) -> str:
    """The name of a run's Argo Workflow."""
    return naming.object_name(run_id)


def command(node: ExecutorNode, parameters: Mapping[str, Any]) -> list[str]:
    """The command line of an executor inside its image."""
    options: list[str] = []
    for key, value in parameters.items():
        options += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    entry = node.entry_point
    if entry.endswith(".py"):
        return ["python", str(APP_DIR / entry), *options]
    if ":" in entry:
        return ["python", "-c", CALL_FUNCTION, entry, *options]
    return ["python", "-m", entry, *options]


def run_artifacts(settings: KubernetesPlatformSettings, run_id: str) -> str | None:
    """The artifact location of a run's shared folder (None: not shared)."""
    if settings.run_artifacts is None:
        return None
    return f"{settings.run_artifacts.rstrip('/')}/{naming.label_value(run_id)}"


def synced(settings: KubernetesPlatformSettings, run_id: str, argv: list[str]) -> list[str]:
    """``argv`` wrapped so the run folder is fetched before it and stored after it.

    Steps run in pods of their own: what one writes to ``SCANFLOW_RUN_DIR``
    reaches the next through the run's artifact location (see
    :mod:`scanflow_agents.platforms.rundirs`).
    """
    location = run_artifacts(settings, run_id)
    if location is None:
        return argv
    return ["python", "-m", SYNC_MODULE, "--uri", location, "--dir", str(RUN_DIR), "--", *argv]


def step_container(run: RunContext, node: ExecutorNode) -> Obj:
    """The container of one executor in a run."""
    settings, run_id = run.settings, run.run_id
    values = {
        **common_env(settings),
        "SCANFLOW_RUN_ID": run_id,
        "SCANFLOW_WORKFLOW": run.workflow.name,
        "SCANFLOW_NODE": node.name,
        "SCANFLOW_RUN_DIR": str(RUN_DIR),
        "SCANFLOW_RUN_ARTIFACTS": run_artifacts(settings, run_id),
        # Libraries write caches and config under HOME: the root filesystem is read-only.
        "HOME": "/tmp",
    }
    parameters = {**node.parameters, **run.parameters.get(node.name, {})}
    container: Obj = {
        "name": STEP_CONTAINER,
        "image": run.images[node.name],
        "command": synced(settings, run_id, command(node, parameters)),
        "env": env_list(values) + env_list(dict(node.env)),
        "resources": resources(node.resources, settings.default_resources),
        "volumeMounts": [{"name": RUN_DIR_VOLUME, "mountPath": str(RUN_DIR)}],
    }
    container["workingDir"] = str(APP_DIR / node.workdir) if node.workdir else str(APP_DIR)
    return container


def step_timeout(settings: KubernetesPlatformSettings, node: ExecutorNode) -> int:
    """A step's deadline in seconds: its own timeout, else the settings' default."""
    return max(1, round(node.timeout if node.timeout is not None else settings.step_timeout))


def job(run: RunContext, node: ExecutorNode) -> Obj:
    """The Job of one executor in a run: one pod, never restarted in place."""
    settings = run.settings
    object_labels = run.labels("executor", node.name)
    pod = pod_spec(settings, step_container(run, node))
    pod["volumes"].append({"name": RUN_DIR_VOLUME, "emptyDir": {}})
    spec: Obj = {
        "backoffLimit": settings.job_backoff_limit,
        # A pod evicted by a node drain, a preemption or a taint did not fail the
        # step: it does not count against backoffLimit (0), and the Job makes a new pod.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                }
            ]
        },
        "activeDeadlineSeconds": step_timeout(settings, node),
        "ttlSecondsAfterFinished": settings.finished_ttl,
        "template": {
            "metadata": {"labels": object_labels},
            "spec": {**pod, "restartPolicy": "Never"},
        },
    }
    return {
        "apiVersion": JOBS.api_version,
        "kind": JOBS.kind,
        "metadata": {
            "name": job_name(run.run_id, node.name),
            "namespace": run.namespace,
            "labels": object_labels,
            "annotations": {naming.RUN_ID: run.run_id},
        },
        "spec": spec,
    }


def argo_workflow(run: RunContext) -> Obj:
    """One Argo Workflow running the executors as a DAG (its edges as dependencies)."""
    settings, workflow = run.settings, run.workflow
    object_labels = run.labels("run")
    tasks: list[Obj] = []
    templates: list[Obj] = []
    names = {n.name for n in workflow.executors}
    for node in workflow.executors:
        task: Obj = {"name": node.name, "template": node.name}
        deps = sorted(d for d in workflow.dependencies(node.name) if d in names)
        if deps:
            task["dependencies"] = deps
        tasks.append(task)
        container = step_container(run, node)
        container.pop("name")
        harden(settings, container)
        template: Obj = {
            "name": node.name,
            "metadata": {"labels": {**object_labels, naming.NODE: node.name}},
            "container": container,
            "activeDeadlineSeconds": step_timeout(settings, node),
        }
        templates.append(template)
    spec: Obj = {
        "entrypoint": "main",
        "templates": [{"name": "main", "dag": {"tasks": tasks}}, *templates],
        # Each step's pod gets its own emptyDirs; the run folder travels
        # through the run's artifact location, as with Jobs.
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": RUN_DIR_VOLUME, "emptyDir": {}},
        ],
        "securityContext": pod_security(settings),
        # Argo's own wait container reports through the executor's service
        # account (see the README); the step itself needs no token.
        "automountServiceAccountToken": False,
        "executor": {"serviceAccountName": settings.argo_executor_service_account},
        "activeDeadlineSeconds": max(1, round(settings.run_timeout)),
        # Pods of steps that succeeded go at once; failed ones stay for their
        # logs until the Workflow itself goes, finished_ttl after it ended.
        "podGC": {"strategy": "OnPodSuccess"},
        "ttlStrategy": {"secondsAfterCompletion": settings.finished_ttl},
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    return {
        "apiVersion": ARGO_WORKFLOWS.api_version,
        "kind": ARGO_WORKFLOWS.kind,
        "metadata": {
            "name": argo_name(run.run_id),
            "namespace": run.namespace,
            "labels": object_labels,
            "annotations": {naming.RUN_ID: run.run_id},
        },
        "spec": spec,
    }


def job_state(obj: Obj) -> tuple[NodeState, str | None]:
    """A Job's state as a node state ('running', 'succeeded', 'failed') and why.

    ``SuccessCriteriaMet`` and ``FailureTarget`` (Kubernetes 1.31+) come before
    ``Complete`` and ``Failed``, while the controller still terminates pods:
    the outcome is known then, and a run need not wait for the cleanup.
    """
    status = obj.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded", None
        if condition.get("type") in ("Failed", "FailureTarget"):
            reason = condition.get("reason")
            why = condition.get("message") or reason or "job failed"
            if reason == "DeadlineExceeded":
                why = f"deadline exceeded: {why}"
            return "failed", str(why)
    if (status.get("succeeded") or 0) >= 1:
        return "succeeded", None
    limit = (obj.get("spec") or {}).get("backoffLimit", 6)
    if (status.get("failed") or 0) > limit:
        return "failed", f"{status['failed']} pod(s) failed"
    return "running", None


ARGO_PHASES: dict[str, NodeState] = {
    "Pending": "pending",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Error": "failed",
    "Omitted": "skipped",
    "Skipped": "skipped",
}
