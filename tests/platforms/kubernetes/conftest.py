"""A Kubernetes emulator (kmock) per test, over real HTTP, and a platform pointed at it.

The emulator (:class:`~.emulator.AdmittingEmulator`: kmock behind the
admission a real API server does) stores objects and answers the API, but runs no controllers: no
pods appear for a Deployment and no Job ever finishes by itself. Tests play
the controller where they need one: :meth:`Cluster.finish_job` patches a
Job's status subresource as the Job controller would, :meth:`Cluster.add_pod`
seeds a pod as a ReplicaSet would. The emulator also ignores label
selectors, which the platform's client filters again on its side, and serves
no cluster-scoped core resources (namespaces), which the platform creates
only on request and best-effort.

One emulator per test: its per-request cost grows with the requests it has
recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import kmock
import pytest

from scanflow_agents.platforms.kubernetes import (
    KubernetesPlatform,
    KubernetesPlatformSettings,
    permissions,
)
from scanflow_agents.testing import eventually
from scanflow_agents.workflows import Workflow, load_workflow

from .emulator import ACCESS_REVIEWS, AdmittingEmulator

# The path of a Namespace object, or of their collection.
NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")
TEAM = "vision"
NAMESPACE = f"scanflow-{TEAM}"
BUS_NAMESPACE = "ml"  # the agents' subjects: not the team's
BUILDS = "scanflow-builds"
RESOURCES = {
    "deployments": "apps/v1/deployments",
    "services": "v1/services",
    "configmaps": "v1/configmaps",
    "pods": "v1/pods",
    "events": "v1/events",
    "jobs": "batch/v1/jobs",
    "workflows": "argoproj.io/v1alpha1/workflows",
    "serviceaccounts": "v1/serviceaccounts",
}
PATHS = {
    "deployments": "/apis/apps/v1",
    "services": "/api/v1",
    "configmaps": "/api/v1",
    "pods": "/api/v1",
    "events": "/api/v1",
    "jobs": "/apis/batch/v1",
    "workflows": "/apis/argoproj.io/v1alpha1",
    "serviceaccounts": "/api/v1",
}


class Cluster:
    """What the emulator holds, and the controller's part played by hand."""

    def __init__(self, emulator: AdmittingEmulator) -> None:
        self.emulator = emulator
        # The team and build namespaces exist; a test removes one to see it missed.
        emulator.namespaces |= {NAMESPACE, BUILDS}
        emulator.build_namespaces.add(BUILDS)
        # (group, resource, verb) cluster-wide requests a test allows on purpose.
        self.cluster_wide: set[tuple[str, str, str]] = set()

    def serve(self, *plurals: str) -> None:
        """Declare resource types (as installed CRDs and API groups would be)."""
        for plural in plurals:
            self.emulator.resources[RESOURCES[plural]] = kmock.ResourceInfo()

    def objects(self, plural: str, namespace: str = NAMESPACE) -> dict[str, dict[str, Any]]:
        """Live objects of one type in a namespace, by name."""
        found = {}
        for (resource, ns, name), obj in self.emulator.objects.items():
            if resource.plural == plural and ns == namespace and not obj.deleted:
                found[name] = obj.raw
        return found

    def get(self, plural: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        """One live object (KeyError if there is none)."""
        return self.objects(plural, namespace)[name]

    def history(self, plural: str, name: str, namespace: str = NAMESPACE) -> list[Any]:
        """Every version of an object (None marks a deletion)."""
        return list(self.emulator.objects[RESOURCES[plural], namespace, name].history)

    def unpermitted(self) -> list[str]:
        """The platform's requests its Role would refuse (``permissions.RULES``).

        The platform's requests are told apart by their User-Agent: the
        emulator's own client (used by the tests playing controllers) says
        ``kmock``. A request in the build namespace is judged by the build
        rules, one on Argo Workflows by the Argo rules, any other by the team
        namespace's; a cluster-scoped one is refused unless listed in
        ``self.cluster_wide`` (what a test enabled on purpose).
        """
        refused = []
        for request in self.emulator:
            if str(request.headers.get("User-Agent", "")).startswith("kmock/"):
                continue
            if request.url.path == ACCESS_REVIEWS:
                continue  # Every authenticated user may ask what it may do.
            namespace = NAMESPACE_PATH.match(request.url.path)
            if namespace is not None:  # A Namespace object: cluster-scoped.
                group, resource, named, request_namespace = (
                    "",
                    "namespaces",
                    bool(namespace[1]),
                    None,
                )
            elif request.resource is None or request.resource.plural is None:
                continue  # Discovery (/apis/<group>): no resource grant involved.
            else:
                resource = request.resource.plural
                if request.subresource:
                    resource += "/" + request.subresource
                group = request.resource.group or ""
                named, request_namespace = request.name is not None, request.namespace
            action = permissions.verb(str(request.method.value), named)
            what = f"{request.method.value} {request.url.path} ({action} {group}/{resource})"
            if request_namespace is None:
                if (group, resource, action) not in self.cluster_wide:
                    refused.append(what + " cluster-wide")
                continue
            if not self.emulator.in_rules(request_namespace, group, resource, action):
                refused.append(f"{what} in namespace {request_namespace}")
        return refused

    def requests(self, method: str, plural: str) -> list[Any]:
        """The requests of one HTTP method on one resource type, in order."""
        return [
            r
            for r in self.emulator[method.lower()]
            if r.resource is not None and r.resource.plural == plural
        ]

    def created(self, plural: str) -> list[str]:
        """Names of the objects created, in the order of their POSTs."""
        return [r.data["metadata"]["name"] for r in self.requests("post", plural)]

    async def add(self, plural: str, body: dict[str, Any], namespace: str = NAMESPACE) -> None:
        """Create an object over HTTP, as another client of the cluster would."""
        body.setdefault("metadata", {}).setdefault("namespace", namespace)
        path = f"{PATHS[plural]}/namespaces/{namespace}/{plural}"
        response = await self.emulator.clients[0].post(path, json=body)
        assert response.status == 200, await response.text()

    async def patch_status(
        self, plural: str, name: str, status: dict[str, Any], namespace: str = NAMESPACE
    ) -> None:
        """PATCH an object's status subresource, as its controller would."""
        path = f"{PATHS[plural]}/namespaces/{namespace}/{plural}/{name}/status"
        response = await self.emulator.clients[0].patch(
            path,
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert response.status == 200, await response.text()

    async def patch_object(
        self, plural: str, name: str, patch: dict[str, Any], namespace: str = NAMESPACE
    ) -> None:
        """Merge-PATCH an object, as the API server or another client would."""
        path = f"{PATHS[plural]}/namespaces/{namespace}/{plural}/{name}"
        response = await self.emulator.clients[0].patch(
            path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status == 200, await response.text()

    async def finish_job(self, name: str, *, ok: bool = True, namespace: str = NAMESPACE) -> None:
        """Wait for a Job to exist, then mark it complete (or failed) as the Job controller does."""
        await eventually(lambda: name in self.objects("jobs", namespace), timeout=10)
        condition = {"type": "Complete" if ok else "Failed", "status": "True"}
        if not ok:
            condition.update(reason="BackoffLimitExceeded", message="pod exited with code 3")
        counts = {"succeeded": 1} if ok else {"failed": 1}
        await self.patch_status("jobs", name, {**counts, "conditions": [condition]}, namespace)

    async def add_pod(
        self, name: str, labels: dict[str, str], *, ready: bool, model_uri: str = ""
    ) -> None:
        """Seed a pod of a Deployment (what its ReplicaSet would create)."""
        await self.add(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": {"scanflow.io/model-uri": model_uri},
                },
                "status": {
                    "phase": "Running",
                    "startTime": "2026-01-01T00:00:00Z",
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                },
            },
        )


class EmulatedController:
    """A controller's part that the emulator does not play: a loop over one kind of object.

    kmock keeps objects but runs no controllers. A subclass says which plural it
    watches and what :meth:`reconcile` does with each object; the loop visits them
    all every ``every`` seconds while the controller is entered
    (``async with Controller(cluster):``).
    """

    plural: str
    every = 0.01

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._task: asyncio.Task[None] | None = None

    async def reconcile(self, name: str, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _loop(self) -> None:
        while True:
            for name, obj in self.cluster.objects(self.plural).items():
                await self.reconcile(name, obj)
            await asyncio.sleep(self.every)


class DeploymentController(EmulatedController):
    """The Deployment controller's part: new generations, and rollouts that finish or stall.

    Every change of a Deployment's spec bumps ``metadata.generation`` (the API
    server's job); then the status says the rollout completed, or, for a
    template whose model URI contains "broken", that it stalled past its
    progress deadline (the new pods never became ready).
    """

    plural = "deployments"

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self._seen: dict[str, str] = {}

    async def reconcile(self, name: str, obj: dict[str, Any]) -> None:
        spec = json.dumps(obj.get("spec"), sort_keys=True)
        if self._seen.get(name) != spec:
            self._seen[name] = spec
            await self._act(name, obj)

    async def _act(self, name: str, obj: dict[str, Any]) -> None:
        generation = int(obj["metadata"].get("generation") or 0) + 1
        await self.cluster.patch_object(
            "deployments", name, {"metadata": {"generation": generation}}
        )
        self._seen[name] = json.dumps(obj.get("spec"), sort_keys=True)
        replicas = int((obj.get("spec") or {}).get("replicas", 1))
        template = json.dumps((obj.get("spec") or {}).get("template"))
        if "broken" in template:
            status: dict[str, Any] = {
                "observedGeneration": generation,
                "replicas": replicas + 1,
                "updatedReplicas": 1,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{name}-new" has timed out progressing.',
                    }
                ],
            }
        else:
            status = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                ],
            }
        await self.cluster.patch_status("deployments", name, status)


def rebuild(workflow: Workflow, **update: Any) -> Workflow:
    """A validated copy of ``workflow`` with fields replaced (``model_copy`` skips the checks)."""
    return Workflow.model_validate({**workflow.model_dump(), **update})


def with_node(workflow: Workflow, name: str, **update: Any) -> Workflow:
    """A copy of ``workflow`` with one node's fields replaced."""
    nodes = [n.model_copy(update=update) if n.name == name else n for n in workflow.nodes]
    return rebuild(workflow, nodes=[n.model_dump() for n in nodes])


@pytest.fixture
def cluster(kmock: AdmittingEmulator) -> Iterator[Cluster]:
    """The test's emulator, serving the core types the platform uses (no Argo).

    After the test, every request the platform sent must be one its Role
    grants (``permissions.RULES``, which the Helm chart's Roles are checked
    against): a new call without a grant fails here, not on a cluster.
    """
    found = Cluster(kmock)
    found.serve("deployments", "services", "configmaps", "pods", "events", "jobs")
    yield found
    refused = found.unpermitted()
    assert not refused, "requests outside permissions.RULES:\n" + "\n".join(refused)


@pytest.fixture
def settings(cluster: Cluster) -> KubernetesPlatformSettings:
    """Settings pointing at the emulator, polling fast."""
    return KubernetesPlatformSettings(
        host=str(cluster.emulator.url).rstrip("/"),
        team=TEAM,
        bus_namespace=BUS_NAMESPACE,
        poll_interval=0.02,
        tracking_uri="http://mlflow.mlops:5000",
        nats_url="nats://nats.mlops:4222",
        registry="registry.example.com/ml",
        registry_secret="push-credentials",
        env_secret="scanflow-credentials",
    )


@pytest.fixture
async def platform(settings: KubernetesPlatformSettings) -> AsyncIterator[KubernetesPlatform]:
    """The platform under test, closed after the test."""
    async with KubernetesPlatform(settings) as found:
        yield found


@pytest.fixture
def online() -> Workflow:
    """Two model services, one with resources and a fixed port."""
    return load_workflow(
        {
            "name": "serve",
            "kind": "online",
            "nodes": [
                {
                    "name": "model",
                    "model_uri": "models:/digits/1",
                    "replicas": 2,
                    "resources": {"cpu": "500m", "memory": "1Gi"},
                    "env": {"LOG_LEVEL": "debug"},
                },
                {"name": "shadow", "model_uri": "models:/digits/2", "port": 9000},
            ],
        }
    )


@pytest.fixture
def batch() -> Workflow:
    """A diamond: prepare → (fit, check) → report."""
    return load_workflow(
        {
            "name": "retrain",
            "nodes": [
                {"name": "prepare", "entry_point": "digits.prepare", "image": "team/steps:1"},
                {
                    "name": "fit",
                    "entry_point": "digits.training:fit",
                    "image": "team/steps:1",
                    "parameters": {"C": 0.5},
                    "timeout": 600,
                },
                {"name": "check", "entry_point": "digits.check", "image": "team/steps:1"},
                {"name": "report", "entry_point": "digits.report", "image": "team/steps:1"},
            ],
            "edges": [
                ["prepare", "fit"],
                ["prepare", "check"],
                ["fit", "report"],
                ["check", "report"],
            ],
        }
    )


@pytest.fixture
async def controller(cluster: Cluster) -> AsyncIterator[DeploymentController]:
    """A Deployment controller playing on the emulator for the test."""
    async with DeploymentController(cluster) as found:
        yield found


class FaultyProxy:
    """An HTTP proxy in front of the emulator that forbids some paths or breaks connections.

    kmock answers every request it understands; a real API server also
    answers 403 (RBAC) and its connections break (restarts, load balancers).
    ``forbid`` holds path fragments answered 403 for a method; ``breaks`` is
    how many of the next requests get their connection closed without an
    answer (the client sees ``ServerDisconnectedError``).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.forbid: list[tuple[str, str]] = []
        self.breaks = 0
        self.broken = 0
        self.url = ""
        self._runner: Any = None

    async def start(self) -> FaultyProxy:
        from aiohttp import ClientSession, web

        self._session = ClientSession()

        async def handle(request: web.Request) -> web.StreamResponse:
            if self.breaks > 0:
                self.breaks -= 1
                self.broken += 1
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            for method, fragment in self.forbid:
                if request.method == method and fragment in request.path:
                    message = f'{fragment} is forbidden: User "system:serviceaccount:x" cannot'
                    body = {
                        "kind": "Status",
                        "status": "Failure",
                        "reason": "Forbidden",
                        "message": message,
                        "code": 403,
                    }
                    return web.json_response(body, status=403)
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as answer:
                return web.Response(
                    status=answer.status,
                    body=await answer.read(),
                    content_type=answer.content_type,
                )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self._session.close()
        await self._runner.cleanup()


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[FaultyProxy]:
    """A faulty proxy in front of the test's emulator."""
    found = await FaultyProxy(str(cluster.emulator.url)).start()
    yield found
    await found.stop()
