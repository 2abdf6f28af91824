"""Images for nodes and agents, built in the cluster by rootless BuildKit.

Every image starts ``FROM`` the project's serving image (``base_image``: the
framework, the model server and its libraries, a non-root user) and adds the
node's requirements and scripts; nothing is installed from a package index
but the node's own requirements.

The builder is BuildKit in its rootless image (``buildctl-daemonless.sh``
runs the daemon inside the build pod). Kaniko, the former choice, was
archived upstream in June 2025 (no more security fixes); BuildKit is the
engine of ``docker build``, maintained by the Moby project, and its rootless
mode runs as an unprivileged user. It still needs what no "restricted" pod
may have (an unconfined seccomp and AppArmor profile for its user
namespaces), so build Jobs go to a namespace of their own
(``build_namespace``) that the cluster admits at the "privileged" level,
away from the teams' restricted namespaces.

A build context (Dockerfile, requirements, the entry point's scripts) is
rendered here and travels to the build pod as a ConfigMap mounted at
``/context`` (copied to ``/workspace`` by an init container). That needs no
bucket and no registry-side context, but a ConfigMap holds at most 1 MiB
(etcd's object limit): a context larger than ``max_context_bytes`` is
refused with the node's name. Workflows with big code belong in an image of
their own (the node's ``image`` field). The ConfigMap is deleted once the
build ended; the Job goes ``build_ttl`` seconds after it finished.

The image tag is a hash of the context, so a node whose files and
requirements did not change maps to the same image, and its build Job (named
after the hash too) is found done instead of being run again while it is
kept. Deploy and run compute the same name, so they use what a build pushed
without being told.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from scanflow_agents.platforms.kubernetes import naming
from scanflow_agents.platforms.kubernetes.client import CONFIGMAPS, JOBS, PODS, KubeClient, Obj
from scanflow_agents.platforms.kubernetes.jobs import job_state
from scanflow_agents.platforms.kubernetes.manifests import TMP_VOLUME, agent_reference, resources
from scanflow_agents.platforms.kubernetes.pods import stuck_reason
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
from scanflow_agents.platforms.results import BuildResult, PlatformError
from scanflow_agents.workflows import AgentSpec, ExecutorNode, Node, ServiceNode, Workflow

WORKSPACE = "/workspace"
BUILDER_HOME = "/home/user"  # the rootless BuildKit image's user


def dockerfile(settings: KubernetesPlatformSettings, requirements: bool, tail: list[str]) -> str:
    """A Dockerfile from the project image: the requirements as root, then its user again."""
    steps = [f"FROM {settings.base_image}", "WORKDIR /app"]
    if requirements:
        steps += [
            "USER 0",
            "COPY requirements.txt /app/requirements.txt",
            "RUN pip install --no-cache-dir -r /app/requirements.txt",
        ]
    steps += [*tail, f"USER {settings.run_as_user}"]
    return "\n".join(steps) + "\n"


@dataclass(frozen=True)
class BuildContext:
    """What one image is built from, and where it goes."""

    owner: str  # "workflow/node" or "agent/name", for messages and results
    repository: str  # image name without registry and tag
    files: dict[str, str] = field(default_factory=dict)  # relative path → text
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The content hash: equal contexts, equal images."""
        return naming.digest(self.files, 12)

    def image(self, registry: str) -> str:
        """The full image reference under ``registry``."""
        return f"{registry.rstrip('/')}/{self.repository}:{self.tag}"

    @property
    def size(self) -> int:
        """Bytes of all files."""
        return sum(len(text.encode()) for text in self.files.values())


def needs_build(node: Node) -> bool:
    """Whether a node needs an image of its own: requirements, or scripts to carry."""
    if node.image is not None:
        return False
    return bool(node.requirements) or (
        isinstance(node, ExecutorNode) and node.entry_point.endswith(".py")
    )


def node_context(
    settings: KubernetesPlatformSettings, workflow: Workflow, node: Node
) -> BuildContext:
    """The build context of a node (reads its scripts: call it in a thread)."""
    where = f"node {node.name!r} of workflow {workflow.name!r}"
    files: dict[str, str] = {}
    lines = sorted({line.strip() for line in node.requirements if line.strip()})
    if lines:
        files["requirements.txt"] = "\n".join(lines) + "\n"
    tail: list[str] = []
    if isinstance(node, ExecutorNode) and node.entry_point.endswith(".py"):
        files.update(_scripts(workflow, node, where))
        tail += ["COPY app/ /app/", f'CMD ["python", "/app/{node.entry_point}"]']
    elif isinstance(node, ServiceNode):
        tail.append('ENTRYPOINT ["python", "-m", "scanflow_agents.serving"]')
    files["Dockerfile"] = dockerfile(settings, bool(lines), tail)
    return BuildContext(
        owner=f"{workflow.name}/{node.name}",
        repository=naming.object_name(workflow.name, node.name),
        files=files,
        labels={naming.WORKFLOW: workflow.name, naming.NODE: node.name},
    )


def agent_context(
    settings: KubernetesPlatformSettings, application: str, agent: AgentSpec
) -> BuildContext:
    """The build context of an agent: the framework, and its file if it names one."""
    reference = agent_reference(agent)
    files: dict[str, str] = {}
    steps: list[str] = []
    target, _, klass = reference.partition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise PlatformError(
                "invalid", f"agent {agent.name!r} of application {application!r}: no file {target}"
            )
        files[f"app/{path.name}"] = path.read_text()
        steps.append("COPY app/ /app/")
        reference = f"/app/{path.name}" + (f":{klass}" if klass else "")
    steps.append(f'ENTRYPOINT ["scanflow", "run", "{reference}"]')
    files["Dockerfile"] = dockerfile(settings, False, steps)
    return BuildContext(
        owner=f"agent/{agent.name}",
        repository=naming.object_name(application, "agent", agent.name),
        files=files,
        labels={naming.APPLICATION: application, naming.AGENT: agent.name},
    )


def needs_agent_build(agent: AgentSpec) -> bool:
    """Whether an agent needs an image of its own: it names a file, not a module."""
    return agent_reference(agent).partition(":")[0].endswith(".py")


class ImageBuildResult(BuildResult):
    """A build's result with the image of every node and agent.

    ``images`` maps ``workflow/node`` and ``agent/name`` to the image each runs.
    """

    images: dict[str, str] = Field(default_factory=dict)


def node_image(settings: KubernetesPlatformSettings, workflow: Workflow, node: Node) -> str:
    """The image a node runs: its own, the one a build made for it, or the default."""
    if node.image is not None:
        return node.image
    if not needs_build(node):
        return settings.serving_image if isinstance(node, ServiceNode) else settings.executor_image
    if settings.registry is None:
        raise PlatformError(
            "invalid",
            f"node {node.name!r} of workflow {workflow.name!r} needs an image of its own "
            "(requirements or a script) but has none, and no registry is set to build one",
        )
    return node_context(settings, workflow, node).image(settings.registry)


def builder_objects(
    settings: KubernetesPlatformSettings, context: BuildContext, registry: str
) -> tuple[Obj, Obj]:
    """The ConfigMap carrying a context and the BuildKit Job building it."""
    name = naming.object_name("build", context.repository, context.tag)
    object_labels = {**context.labels, **naming.labels("builds", component="build")}
    namespace = settings.builds_namespace()
    # ConfigMap keys cannot hold "/": files get flat keys and their paths back at mount.
    keys = {path: f"f{i}-{Path(path).name}" for i, path in enumerate(sorted(context.files))}
    configmap: Obj = {
        "apiVersion": CONFIGMAPS.api_version,
        "kind": CONFIGMAPS.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": object_labels},
        "data": {keys[path]: text for path, text in context.files.items()},
    }
    volumes: list[Obj] = [
        {
            "name": "context",
            "configMap": {
                "name": name,
                "items": [{"key": key, "path": path} for path, key in sorted(keys.items())],
            },
        },
        # BuildKit's state (layers being built) and the copied context.
        {"name": "workspace", "emptyDir": {}},
        {"name": "buildkit", "emptyDir": {}},
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
    # ConfigMap volumes hold symlinks (to a ..data folder) that the builder would
    # copy as links: an init container copies the real files into an emptyDir first.
    copy: Obj = {
        "name": "context",
        "image": settings.helper_image,
        "command": ["sh", "-c", f"cp -rL /context/. {WORKSPACE}/"],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [
            {"name": "context", "mountPath": "/context", "readOnly": True},
            {"name": "workspace", "mountPath": WORKSPACE},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    mounts: list[Obj] = [
        {"name": "workspace", "mountPath": WORKSPACE},
        {"name": "buildkit", "mountPath": f"{BUILDER_HOME}/.local/share/buildkit"},
    ]
    if settings.registry_secret:
        volumes.append(
            {
                "name": "registry",
                "secret": {
                    "secretName": settings.registry_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        mounts.append({"name": "registry", "mountPath": f"{BUILDER_HOME}/.docker"})
    container: Obj = {
        "name": "buildkit",
        "image": settings.builder_image,
        "command": ["buildctl-daemonless.sh"],
        "args": [
            "build",
            "--frontend=dockerfile.v0",
            f"--local=context={WORKSPACE}",
            f"--local=dockerfile={WORKSPACE}",
            f"--output=type=image,name={context.image(registry)},push=true",
        ],
        # Without a process sandbox BuildKit needs no mount of a fresh /proc.
        "env": [
            {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"},
            {"name": "DOCKER_CONFIG", "value": f"{BUILDER_HOME}/.docker"},
        ],
        "volumeMounts": mounts,
        "resources": resources(settings.build_resources),
        # The one exception to "restricted" (see the module's docstring): rootless
        # BuildKit creates user namespaces, which RuntimeDefault seccomp and
        # AppArmor profiles forbid. It still runs as its unprivileged user.
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
        },
    }
    pod: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "initContainers": [copy],
        "containers": [container],
        "volumes": volumes,
    }
    # The builder image and the base image may both be private.
    secrets = [*settings.image_pull_secrets]
    if settings.registry_secret and settings.registry_secret not in secrets:
        secrets.append(settings.registry_secret)
    if secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in secrets]
    job: Obj = {
        "apiVersion": JOBS.api_version,
        "kind": JOBS.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": object_labels,
            "annotations": {"scanflow.io/image": context.image(registry)},
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": max(1, round(settings.build_timeout)),
            "ttlSecondsAfterFinished": settings.build_ttl,
            "template": {"metadata": {"labels": object_labels}, "spec": pod},
        },
    }
    return configmap, job


async def build_image(
    client: KubeClient,
    settings: KubernetesPlatformSettings,
    context: BuildContext,
) -> bool:
    """Build and push one image unless a finished build of the same context exists.

    Returns:
        True if an earlier build was reused.

    Raises:
        PlatformError: ``invalid`` for a context too large or no registry;
            ``failed`` if the build fails or takes longer than ``build_timeout``.
    """
    if settings.registry is None:
        raise PlatformError("invalid", f"building {context.owner}: no registry is set")
    if context.size > settings.max_context_bytes:
        raise PlatformError(
            "invalid",
            f"building {context.owner}: the build context is {context.size} bytes, more than "
            f"{settings.max_context_bytes} (a ConfigMap holds at most 1 MiB); give the node "
            "an image of its own instead",
        )
    configmap, job = builder_objects(settings, context, settings.registry)
    namespace, name = settings.builds_namespace(), job["metadata"]["name"]
    existing = await client.get(JOBS, namespace, name)
    if existing is not None and not naming.matches(existing, job["metadata"]["labels"]):
        raise PlatformError(
            "failed", f"building {context.owner}: {naming.describe(existing)} is not ours"
        )
    if existing is not None and job_state(existing)[0] == "succeeded":
        return True
    if existing is not None and job_state(existing)[0] == "failed":
        # A failed build is not a cache entry: start over.
        await client.delete(JOBS, namespace, name)
        await client.delete(CONFIGMAPS, namespace, name)
        existing = None
    if existing is None:
        if await client.get(CONFIGMAPS, namespace, name) is None:
            await client.create(CONFIGMAPS, namespace, configmap)
        await client.create(JOBS, namespace, job)
    try:
        await _wait(client, settings, namespace, name, context)
    finally:
        # The context served its build; a next build of it creates it again.
        await client.delete(CONFIGMAPS, namespace, name)
    return False


async def _wait(
    client: KubeClient,
    settings: KubernetesPlatformSettings,
    namespace: str,
    name: str,
    context: BuildContext,
) -> None:
    started = time.monotonic()
    deadline = started + settings.build_timeout
    while True:
        current = await client.get(JOBS, namespace, name)
        if current is None:
            raise PlatformError(
                "failed", f"building {context.owner}: Job {namespace}/{name} vanished"
            )
        state, why = job_state(current)
        if state == "succeeded":
            return
        if state == "failed":
            raise PlatformError(
                "failed",
                f"building {context.owner} failed: build Job {namespace}/{name}: {why}; "
                f"see `kubectl logs -n {namespace} job/{name}`",
            )
        if time.monotonic() > deadline:
            raise PlatformError(
                "failed",
                f"building {context.owner}: Job {namespace}/{name} did not finish "
                f"in {settings.build_timeout} s",
            )
        # A pod refused by Pod Security, or one that cannot pull the builder, would
        # otherwise hold the build for its whole timeout.
        pods = await client.find(PODS, namespace, {"job-name": name})
        waited = time.monotonic() - started
        why = await stuck_reason(client, namespace, pods, name, waited, settings.pending_timeout)
        if why is not None:
            raise PlatformError("failed", f"building {context.owner} in {namespace}: {why}")
        await asyncio.sleep(settings.poll_interval)


def _scripts(workflow: Workflow, node: ExecutorNode, where: str) -> dict[str, str]:
    # The entry script and the Python files beside it (the helpers it imports),
    # under app/ with their paths relative to the workflow's folder.
    if workflow.base_dir is None:
        raise PlatformError(
            "invalid",
            f"{where}: entry point {node.entry_point!r} is a script, but the workflow has "
            "no folder to find it in (load it from a file, or give the node an image)",
        )
    base = Path(workflow.base_dir)
    entry = base / node.entry_point
    if not entry.is_file():
        raise PlatformError("invalid", f"{where}: no script {entry}")
    return {
        f"app/{path.relative_to(base).as_posix()}": path.read_text()
        for path in sorted(entry.parent.glob("*.py"))
    }
