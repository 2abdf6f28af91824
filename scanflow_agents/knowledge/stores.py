"""MLflow REST stores that carry their own credentials and retry policy.

Why not ``MlflowClient(tracking_uri=...)``: MLflow's REST path reads the
credentials (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``) and the
HTTP policy (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``_BACKOFF_FACTOR``,
``_TIMEOUT``) from the process environment on *every* request
(``mlflow.utils.credentials.get_default_host_creds`` and
``mlflow.utils.rest_utils.http_request``), and ``MlflowClient`` rebuilds its
store from the URI alone on every access. Two clients in one process could
therefore never use different credentials, and the default policy (7 retries,
backoff factor 2, 120 s timeout) stalls a caller for about four minutes when
the server is down.

MLflow's stores, however, take a ``get_host_creds`` callable, and every REST
call goes through one method, ``_call_endpoint``. The subclasses below give
the stores a callable that returns this client's credentials, and re-route
``_call_endpoint`` through ``http_request`` with this client's explicit
retries and timeout. Nothing touches ``os.environ``.

This module imports MLflow at import time; only :mod:`.clients` imports it,
and only when a client is built, so ``import scanflow_agents`` stays light.
The overridden methods mirror MLflow 3.17's private ``_call_endpoint``
signatures; the pin (``mlflow==3.17.2``) and the tests guard that contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND, ErrorCode
from mlflow.store.model_registry.rest_store import RestStore as _RegistryRestStore
from mlflow.store.tracking.rest_store import RestStore as _TrackingRestStore
from mlflow.utils.proto_json_utils import parse_dict
from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response
from urllib3.exceptions import HTTPError as Urllib3Error

from scanflow_agents.knowledge.errors import StoreUnreachable

# Failures of the transport itself, as opposed to an answer from the server.
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, Urllib3Error)


@dataclass(frozen=True)
class HttpPolicy:
    """How hard one client tries before it reports MLflow unavailable.

    Args:
        timeout: Seconds for one HTTP request (connect and read).
        retries: Extra attempts after a connection error or a 5xx/429 answer.
        backoff: urllib3 backoff factor: sleeps are 0, 2*backoff, 4*backoff, ...
    """

    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5


def _transport_cause(exc: BaseException) -> BaseException | None:
    # http_request wraps every transport failure in a bare MlflowException;
    # the original error survives as its cause or context.
    for cause in (exc.__cause__, exc.__context__):
        if isinstance(cause, _TRANSPORT_ERRORS):
            return cause
    return None


def _send(
    creds: MlflowHostCreds,
    policy: HttpPolicy,
    endpoint: str,
    method: str,
    json_body: str | None,
    response_proto: Any,
    extra_headers: dict[str, str] | None = None,
) -> Any:
    """Call one MLflow REST endpoint and parse the answer into ``response_proto``.

    The same steps as ``mlflow.utils.rest_utils.call_endpoint``, with an
    explicit retry policy and a clear split between "unreachable" and "refused".
    """
    body = json.loads(json_body) if json_body is not None else None
    payload: dict[str, Any] = {"params": body} if method == "GET" else {"json": body}
    try:
        response = http_request(  # type: ignore[no-untyped-call]
            creds,
            endpoint,
            method,
            max_retries=policy.retries,
            backoff_factor=policy.backoff,
            backoff_jitter=0.0,
            timeout=policy.timeout,
            extra_headers=extra_headers,
            # Return the last 5xx instead of raising, so it is reported as such.
            raise_on_status=False,
            **payload,
        )
    except MlflowException as exc:
        cause = _transport_cause(exc)
        if cause is None:
            raise
        raise StoreUnreachable(creds.host, f"{type(cause).__name__}: {cause}") from exc
    if response.status_code >= 500:
        raise StoreUnreachable(creds.host, f"HTTP {response.status_code} from {endpoint}")
    response = verify_rest_response(response, endpoint)
    if response.status_code == 204:
        return response_proto
    parse_dict(js_dict=json.loads(response.text), message=response_proto)  # type: ignore[no-untyped-call]
    return response_proto


def host_creds(
    uri: str, *, username: str | None, password: str | None, token: str | None
) -> MlflowHostCreds:
    """Credentials for one server, built from values instead of the environment."""
    return MlflowHostCreds(host=uri, username=username, password=password, token=token)  # type: ignore[no-untyped-call]


class TrackingStore(_TrackingRestStore):
    """MLflow's tracking REST store with per-instance credentials and policy."""

    def __init__(self, creds: MlflowHostCreds, policy: HttpPolicy) -> None:
        super().__init__(lambda: creds)  # type: ignore[no-untyped-call]
        self._policy = policy

    def _call_endpoint(
        self,
        api: Any,
        json_body: str | None = None,
        endpoint: str | None = None,
        retry_timeout_seconds: float | None = None,
        response_proto: Any = None,
    ) -> Any:
        # Mirrors the parent's routing of v2/v3 APIs, then sends with our policy.
        method_to_info = self._V3_METHOD_TO_INFO if api in self._V3_APIS else self._METHOD_TO_INFO
        self._validate_workspace_support_if_specified()
        if endpoint:
            _, method = method_to_info[api]
        else:
            endpoint, method = method_to_info[api]
        response_proto = response_proto or api.Response()
        return _send(
            self.get_host_creds(), self._policy, endpoint, method, json_body, response_proto
        )


class RegistryStore(_RegistryRestStore):
    """MLflow's model-registry REST store with per-instance credentials and policy."""

    def __init__(self, creds: MlflowHostCreds, policy: HttpPolicy) -> None:
        super().__init__(lambda: creds)  # type: ignore[no-untyped-call]
        self._policy = policy

    def _call_endpoint(
        self,
        api: Any,
        json_body: str | None,
        call_all_endpoints: bool = False,
        extra_headers: dict[str, str] | None = None,
    ) -> Any:
        self._validate_workspace_support_if_specified()
        response_proto = self._get_response_from_method(api)  # type: ignore[no-untyped-call]
        creds = self.get_host_creds()
        if not call_all_endpoints:
            endpoint, method = self._get_endpoint_from_method(api)  # type: ignore[no-untyped-call]
            return _send(
                creds, self._policy, endpoint, method, json_body, response_proto, extra_headers
            )
        # Some APIs exist under several paths (older servers); try them in order.
        endpoints = self._get_all_endpoints_from_method(api)  # type: ignore[no-untyped-call]
        for index, (endpoint, method) in enumerate(endpoints):
            try:
                return _send(
                    creds, self._policy, endpoint, method, json_body, response_proto, extra_headers
                )
            except RestException as exc:
                last = index == len(endpoints) - 1
                if exc.error_code != ErrorCode.Name(ENDPOINT_NOT_FOUND) or last:
                    raise
        raise AssertionError("unreachable: the last endpoint either returned or raised")
