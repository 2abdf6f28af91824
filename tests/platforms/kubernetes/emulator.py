"""The kmock emulator with what a real API server adds in front of its storage.

kmock stores whatever it is sent. An API server first admits a request: an
object in a namespace that does not exist is refused (``NamespaceLifecycle``),
a server-side dry run is checked and answered without storing, and a
``SelfSubjectAccessReview`` says whether the caller's RBAC allows an action.
Every platform test runs against this emulator, so no code path depends on
kmock being kinder than a cluster.
"""

from __future__ import annotations

from typing import Any

import aiohttp.web
import attrs
import kmock

from scanflow_agents.platforms.kubernetes import permissions

ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@attrs.frozen
class NamespaceNotFound(kmock.KubernetesError):
    """What the API server answers for an object in a namespace that does not exist."""

    status: int = 404
    reason: str = "NotFound"


@attrs.frozen
class Forbidden(kmock.KubernetesError):
    """What the API server answers for a request the caller's RBAC does not allow."""

    status: int = 403
    reason: str = "Forbidden"


def _grant_of(request: kmock.Request) -> tuple[str, str, str, str] | None:
    """The ``(namespace, group, resource, verb)`` a namespaced request needs."""
    if request.resource is None or request.resource.plural is None or request.namespace is None:
        return None
    resource = request.resource.plural
    if request.subresource:
        resource += "/" + request.subresource
    verb = permissions.verb(str(request.method.value), request.name is not None)
    return request.namespace, request.resource.group or "", resource, verb


@attrs.define(kw_only=True)
class AdmittingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator behind the admission a real API server does.

    Attributes:
        namespaces: The namespaces that exist.
        build_namespaces: Which of them are build namespaces (their RBAC is the
            ``builds`` scope of ``permissions``); every other is a team namespace.
        denied: ``(namespace, group, resource, verb)`` the caller's Role lacks,
            though ``permissions.RULES`` lists it (a Role older than the code):
            such a request is refused with 403, as RBAC would.
    """

    namespaces: set[str] = attrs.field(factory=set)
    build_namespaces: set[str] = attrs.field(factory=set)
    denied: set[tuple[str, str, str, str]] = attrs.field(factory=set)

    def in_rules(self, namespace: str, group: str, resource: str, verb: str) -> bool:
        """Whether the chart's Role (``permissions.RULES``) in ``namespace`` has the grant."""
        scopes: tuple[permissions.Scope, ...] = (
            ("builds",) if namespace in self.build_namespaces else ("team", "argo")
        )
        return any(permissions.allows(scope, group, resource, verb) for scope in scopes)

    def granted(self, namespace: str, group: str, resource: str, verb: str) -> bool:
        """Whether the caller's Role in ``namespace`` allows ``verb`` on ``group/resource``."""
        denied = (namespace, group, resource, verb) in self.denied
        return not denied and self.in_rules(namespace, group, resource, verb)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.url.path == ACCESS_REVIEWS and str(request.method.value) == "POST":
            return aiohttp.web.json_response(self._review(request.data), status=201)
        if (where := _grant_of(request)) is not None and where in self.denied:
            raise Forbidden(message=f"{request.method.value} {request.url.path} is forbidden")
        if request.action == kmock.action.CREATE and request.namespace is not None:
            if request.namespace not in self.namespaces:
                raise NamespaceNotFound(message=f'namespaces "{request.namespace}" not found')
            if request.params.get("dryRun") == "All":
                return aiohttp.web.json_response(request.data, status=201)
        return await super()._handle(request)

    def _review(self, body: dict[str, Any]) -> dict[str, Any]:
        attributes = body["spec"]["resourceAttributes"]
        resource = attributes["resource"]
        if attributes.get("subresource"):
            resource += "/" + attributes["subresource"]
        namespace, group = attributes.get("namespace", ""), attributes.get("group", "")
        allowed = self.granted(namespace, group, resource, attributes["verb"])
        return {**body, "status": {"allowed": allowed}}
