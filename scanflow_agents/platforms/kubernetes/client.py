"""Asynchronous access to the Kubernetes API, objects as plain dicts.

A thin layer over the official client's asyncio API (``kubernetes.aio``): its
``ApiClient`` brings configuration, authentication, TLS and connection
pooling; the calls go through its generic request path with resource paths
built here. One code path then serves Deployments, Jobs and Argo Workflows
(a custom resource the typed APIs do not model), and objects stay the JSON
the API speaks: no round trip through generated models that drop fields
they do not know.

List calls send a label selector and also filter the answer here: API
servers that ignore selectors (test emulators among them) then return the
same result, at the cost of a larger answer.

The ``kubernetes`` package is imported on first connection, never with this
module, so that ``import scanflow_agents`` stays light.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scanflow_agents.platforms.kubernetes.naming import matches
from scanflow_agents.platforms.kubernetes.settings import KubernetesPlatformSettings
from scanflow_agents.platforms.results import PlatformError

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
PatchKind = Literal["strategic", "merge", "json"]
_CONTENT_TYPES: dict[PatchKind, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}
_INSTALL_HINT = (
    "the Kubernetes platform needs the kubernetes client: pip install 'scanflow-agents[kubernetes]'"
)


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type: ``apps/v1`` ``deployments``."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` of its objects."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        """The URL path of the collection, one object, or one subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if sub is not None:
            parts.append(sub)
        return "/".join(parts)


DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
JOBS = Resource("batch", "v1", "jobs", "Job")
ARGO_WORKFLOWS = Resource("argoproj.io", "v1alpha1", "workflows", "Workflow")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


# Worth another try: no answer (0), the server or a proxy overloaded or restarting.
RETRIED = frozenset({0, 429, 500, 502, 503, 504})


class ApiError(PlatformError):
    """The API server refused a request; ``status`` is its HTTP status.

    Status 0 means no answer: the connection failed or broke (the API server
    is unreachable, restarting, or cut the stream). A 403 says which
    permission is missing, for the operator to add to the Role.
    """

    def __init__(self, status: int, message: str, *, retried: bool = False) -> None:
        code = "not_found" if status == 404 else "invalid" if status in (400, 422) else "failed"
        if status == 403:
            message += (
                " (forbidden: the platform's service account lacks this permission in its Role)"
            )
        super().__init__(code, message)
        self.status = status
        self.retried = retried


class KubeClient:
    """Get, find, create, patch and delete namespaced objects as dicts.

    A request that gets no answer (a refused or broken connection, a
    timeout) or a 429/5xx is tried again ``retries`` times with a growing
    pause; then it raises :class:`ApiError` with status 0 (or the last
    status). A create retried after a broken connection may find the object
    it made itself: that 409 is answered with the object.

    Args:
        api: A ``kubernetes.aio.client.ApiClient``; closed by :meth:`close`.
        timeout: Seconds for one request.
        retries: Further attempts of a request that got no usable answer.
        backoff: Seconds before the first retry (doubled for each next one).
    """

    def __init__(
        self, api: Any, timeout: float = 30.0, *, retries: int = 3, backoff: float = 0.2
    ) -> None:
        self._api = api
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff

    @classmethod
    async def connect(cls, settings: KubernetesPlatformSettings) -> KubeClient:
        """A client for the cluster the settings name (see their docstring)."""
        try:
            from kubernetes.aio import client, config
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise PlatformError("failed", _INSTALL_HINT) from exc
        configuration = client.Configuration()
        if settings.host:
            configuration.host = settings.host
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                await config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=settings.kubeconfig,
                    context=settings.context,
                    client_configuration=configuration,
                )
        configuration.verify_ssl = settings.verify_ssl
        api = client.ApiClient(configuration)
        if settings.impersonate:
            api.set_default_header("Impersonate-User", settings.impersonate)  # type: ignore[no-untyped-call]
        return cls(
            api,
            settings.request_timeout,
            retries=settings.request_retries,
        )

    async def close(self) -> None:
        """Close the connection pool; safe to call twice."""
        await self._api.close()

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        """One object, or None if there is none."""
        try:
            found = await self._call("GET", resource.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        found.setdefault("kind", resource.kind)
        return found

    async def find(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str]
    ) -> list[Obj]:
        """The objects carrying all ``labels``; none if the resource is not served."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        try:
            answer = await self._call(
                "GET", resource.path(namespace), query=[("labelSelector", selector)]
            )
        except ApiError as exc:
            if exc.status == 404:  # No such resource type (e.g. no Argo): nothing of ours.
                return []
            raise
        # List items carry no kind; messages name objects by kind.
        items = [dict(item, kind=resource.kind) for item in answer.get("items") or []]
        return [item for item in items if matches(item, labels)]

    async def events(self, namespace: str, kind: str, name: str) -> list[Obj]:
        """The events about one object (``involvedObject``), oldest first."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        answer = await self._call(
            "GET", EVENTS.path(namespace), query=[("fieldSelector", selector)]
        )
        found = [
            e
            for e in answer.get("items") or []
            if (e.get("involvedObject") or {}).get("name") == name
            and (e.get("involvedObject") or {}).get("kind") == kind
        ]
        return sorted(found, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    async def create(self, resource: Resource, namespace: str, body: Obj) -> Obj:
        """Create an object; raises :class:`ApiError` with status 409 if it exists.

        A 409 to a retried POST (the first one may have been carried out before
        the connection broke) is answered with the object, if it is the one sent.
        """
        try:
            return await self._call("POST", resource.path(namespace), body=body)
        except ApiError as exc:
            if exc.status != 409 or not exc.retried:
                raise
            name = body["metadata"]["name"]
            existing = await self.get(resource, namespace, name)
            wanted = (body.get("metadata") or {}).get("labels") or {}
            if existing is None or not matches(existing, wanted):
                raise
            return existing

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: Obj | Sequence[Obj],
        *,
        kind: PatchKind = "merge",
        sub: str | None = None,
    ) -> Obj:
        """Patch an object or its subresource (``scale``, ``status``)."""
        return await self._call(
            "PATCH",
            resource.path(namespace, name, sub),
            body=body if isinstance(body, dict) else list(body),
            content_type=_CONTENT_TYPES[kind],
        )

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete an object and, in the background, what it owns; False if absent."""
        try:
            await self._call(
                "DELETE",
                resource.path(namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def serves(self, group: str, version: str) -> bool:
        """Whether the API server serves ``group/version`` (discovery)."""
        try:
            answer = await self._call("GET", f"/apis/{group}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return any(v.get("version") == version for v in answer.get("versions") or [])

    async def allowed(self, namespace: str, group: str, resource: str, verb: str) -> bool:
        """Whether this client's identity may ``verb`` ``group/resource`` in ``namespace``.

        A SelfSubjectAccessReview: every authenticated user may ask it, and the
        API server answers from the RBAC in force (``resource`` may name a
        subresource, ``deployments/scale``).
        """
        name, _, sub = resource.partition("/")
        attributes = {"namespace": namespace, "group": group, "resource": name, "verb": verb}
        if sub:
            attributes["subresource"] = sub
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        answer = await self._call("POST", ACCESS_REVIEWS, body=body)
        return bool((answer.get("status") or {}).get("allowed"))

    async def namespace_exists(self, namespace: str, resource: Resource = SERVICES) -> bool | None:
        """Whether ``namespace`` exists, asked without any cluster-wide grant.

        A server-side dry run of creating an empty ``resource`` (a Service or a
        ConfigMap: one the namespace's Role lets the platform create): the API
        server refuses an object in a missing namespace with 404, and stores
        nothing either way. ``None``: the answer says neither (a 403).
        """
        body: Obj = {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {"name": "scanflow-preflight", "namespace": namespace},
        }
        if resource == SERVICES:
            body["spec"] = {"ports": [{"port": 80}]}
        try:
            await self._call("POST", resource.path(namespace), query=[("dryRun", "All")], body=body)
        except ApiError as exc:
            if exc.status == 409:  # Someone's object of that name: the namespace is there.
                return True
            if exc.status == 404:
                return False
            if exc.status == 403:
                return None
            raise
        return True

    async def create_namespace(self, name: str) -> bool:
        """Create a namespace if missing; False (logged) if that was not possible."""
        path = f"/api/v1/namespaces/{name}"
        try:
            await self._call("GET", path)
            return True
        except ApiError as exc:
            if exc.status != 404:
                logger.warning("cannot check namespace %s: %s", name, exc)
                return False
        try:
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            await self._call("POST", "/api/v1/namespaces", body=body)
        except ApiError as exc:
            if exc.status == 409:
                return True
            logger.warning("cannot create namespace %s: %s", name, exc)
            return False
        logger.info("created namespace %s", name)
        return True

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Obj:
        for attempt in range(self._retries + 1):
            try:
                return await self._once(method, path, query, body, content_type)
            except ApiError as exc:
                exc.retried = attempt > 0
                if exc.status not in RETRIED or attempt == self._retries:
                    raise
                pause = self._backoff * 2**attempt
                logger.warning("%s; trying again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        body: Any,
        content_type: str | None,
    ) -> Obj:
        from aiohttp import ClientError
        from kubernetes.aio.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if content_type or body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            request = await self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = await self._api.call_api(*request, _request_timeout=self._timeout)
            await response.read()
        except ApiException as exc:  # Raised for transport-level refusals.
            raise ApiError(int(exc.status or 0), f"{method} {path}: {exc.reason}") from exc
        except (OSError, TimeoutError, ClientError) as exc:
            # aiohttp's ServerDisconnectedError and ClientPayloadError (a stream cut
            # mid-answer) are neither OSError nor TimeoutError: all are "no answer".
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ApiError(0, f"{method} {path}: Kubernetes API unreachable: {what}") from exc
        data: Any = json.loads(response.data) if response.data else {}
        if not 200 <= response.status < 300:
            message = data.get("message") if isinstance(data, dict) else None
            raise ApiError(
                response.status,
                f"{method} {path}: {response.status} {message or response.reason}",
            )
        return data if isinstance(data, dict) else {}
