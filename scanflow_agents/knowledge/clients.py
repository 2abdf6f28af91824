"""An asyncio facade over MLflow's tracking and model-registry stores.

Every MLflow call blocks (``requests`` underneath), so each one runs in a small
thread pool owned by the client: the event loop never waits on MLflow, and a
slow server stalls at most this client's pool, not the loop's default executor
that other libraries share. Each client has its own URI, credentials and retry
policy (see :mod:`.stores`); nothing global is read or written, so clients for
different servers can be used side by side.

The client exposes a few typed conveniences and two generic entry points,
:meth:`KnowledgeClient.tracking` and :meth:`KnowledgeClient.registry`, that run
any store method in the pool with the same error mapping. Readers, the
application store and the recorder are built on those.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from scanflow_agents.knowledge.errors import KnowledgeUnavailable, StoreUnreachable
from scanflow_agents.knowledge.readonly import ReadOnlyStore
from scanflow_agents.redaction import redact
from scanflow_agents.settings import MlflowSettings

if TYPE_CHECKING:
    from mlflow.entities import Run

T = TypeVar("T")

#: Longest page MLflow's servers accept for ``search_runs``.
MAX_PAGE = 1000


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


class KnowledgeClient:
    """One MLflow server (tracking and registry), used from asyncio.

    Args:
        settings: Where the server is, how to authenticate, and the retry policy:
            ``retries`` extra attempts after a connection error or a 5xx answer
            before :class:`KnowledgeUnavailable` is raised (kept low on purpose:
            the callers, sensors and the recorder, retry on their own schedule),
            ``backoff`` between them (0, 2x, 4x... seconds).
        workers: Threads for concurrent calls of this client.
        read_only: Reads only: every write raises
            :class:`~scanflow_agents.knowledge.readonly.KnowledgeReadOnly`
            (what a replay gives an agent).
    """

    def __init__(
        self,
        settings: MlflowSettings,
        *,
        workers: int = 4,
        read_only: bool = False,
    ) -> None:
        self.settings = settings
        self.read_only = read_only
        self.tracking_uri = settings.tracking_uri.rstrip("/")
        self.registry_uri = (settings.registry_uri or self.tracking_uri).rstrip("/")
        #: The tracking URI as it may be shown (logs, errors): credentials masked.
        self.shown_uri = redact(self.tracking_uri)
        self._policy_args = (settings.timeout, settings.retries, settings.backoff)
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"mlflow-{urlsplit(self.tracking_uri).hostname}"
        )
        self._stores: tuple[Any, Any] | None = None
        self._stores_lock = threading.Lock()
        self._experiment_ids: dict[str, str] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<KnowledgeClient {self.shown_uri}>"

    async def __aenter__(self) -> KnowledgeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the thread pool after the calls in flight; safe to call twice."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _build_stores(self) -> tuple[Any, Any]:
        # Built lazily, in a worker thread: importing MLflow takes about a second.
        with self._stores_lock:
            if self._stores is None:
                tracking = self._make_store(self.tracking_uri, registry=False)
                registry = self._make_store(self.registry_uri, registry=True)
                if self.read_only:
                    tracking = ReadOnlyStore(tracking, self.shown_uri)
                    registry = ReadOnlyStore(registry, redact(self.registry_uri))
                self._stores = (tracking, registry)
            return self._stores

    def _make_store(self, uri: str, *, registry: bool) -> Any:
        if urlsplit(uri).scheme in ("http", "https"):
            from scanflow_agents.knowledge.stores import (
                HttpPolicy,
                RegistryStore,
                TrackingStore,
                host_creds,
            )

            timeout, retries, backoff = self._policy_args
            policy = HttpPolicy(timeout=timeout, retries=retries, backoff=backoff)
            creds = host_creds(
                uri,
                username=self.settings.username,
                password=_secret(self.settings.password),
                token=_secret(self.settings.token),
            )
            return RegistryStore(creds, policy) if registry else TrackingStore(creds, policy)
        # Local stores (a sqlite file, a directory) need no credentials: MLflow's
        # own resolution by URI is fine there and keeps the embedded stack simple.
        if registry:
            from mlflow.tracking._model_registry.utils import _get_store as registry_store

            return registry_store(uri)  # type: ignore[no-untyped-call]
        from mlflow.tracking._tracking_service.utils import _get_store as tracking_store

        return tracking_store(uri)  # type: ignore[no-untyped-call]

    async def _run(self, operation: str, fn: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed; cannot continue {operation}")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except StoreUnreachable as exc:
            raise KnowledgeUnavailable(exc.uri, operation, exc.reason) from exc

    async def tracking(self, operation: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(tracking_store)`` in the pool.

        Args:
            operation: What the call does, for error messages ("creating run x").
            fn: Receives MLflow's tracking store (``AbstractStore`` interface).

        Raises:
            KnowledgeUnavailable: MLflow could not be reached.
        """
        return await self._run(operation, lambda: fn(self._build_stores()[0]))

    async def registry(self, operation: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(registry_store)`` in the pool; like :meth:`tracking`."""
        return await self._run(operation, lambda: fn(self._build_stores()[1]))

    async def experiment_id(self, name: str, *, create: bool = False) -> str | None:
        """The id of the experiment called ``name``, cached once known.

        Args:
            name: Experiment name.
            create: Create the experiment if it does not exist.

        Returns:
            The id, or None if it does not exist and ``create`` is false.
        """
        if name in self._experiment_ids:
            return self._experiment_ids[name]

        def lookup(store: Any) -> str | None:
            from mlflow.exceptions import MlflowException

            experiment = store.get_experiment_by_name(name)
            if experiment is not None and experiment.lifecycle_stage == "active":
                return str(experiment.experiment_id)
            if not create:
                return None
            try:
                return str(store.create_experiment(name))
            except MlflowException as exc:
                # Another agent created it between our two calls.
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                return str(store.get_experiment_by_name(name).experiment_id)

        found = await self.tracking(f"looking up experiment '{name}'", lookup)
        if found is not None:
            self._experiment_ids[name] = found
        return found

    async def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str = "",
        *,
        order_by: Sequence[str] = (),
        max_results: int = MAX_PAGE,
        page_token: str | None = None,
        operation: str | None = None,
    ) -> tuple[list[Run], str | None]:
        """One page of active runs; returns the runs and the next page token."""

        def search(store: Any) -> tuple[list[Run], str | None]:
            from mlflow.entities import ViewType

            page = store.search_runs(
                list(experiment_ids),
                filter_string,
                ViewType.ACTIVE_ONLY,
                max_results,
                list(order_by),
                page_token,
            )
            return list(page), page.token

        label = operation or f"searching runs of experiments {list(experiment_ids)}"
        return await self.tracking(label, search)

    async def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log metrics ``(key, value, timestamp_ms, step)``, params and tags at once."""

        def log(store: Any) -> None:
            from mlflow.entities import Metric, Param, RunTag

            store.log_batch(
                run_id,
                [Metric(k, v, ts, step) for k, v, ts, step in metrics],
                [Param(k, v) for k, v in (params or {}).items()],
                [RunTag(k, v) for k, v in (tags or {}).items()],
            )

        await self.tracking(f"logging to run {run_id}", log)

    async def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        start_time: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create a run (status RUNNING) and return its id."""

        def create(store: Any) -> str:
            import time

            from mlflow.entities import RunTag

            run = store.create_run(
                experiment_id,
                "scanflow",
                start_time or int(time.time() * 1000),
                [RunTag(k, v) for k, v in (tags or {}).items()],
                run_name,
            )
            return str(run.info.run_id)

        return await self.tracking(f"creating a run in experiment {experiment_id}", create)

    async def end_run(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        """Set a run's terminal status (FINISHED, FAILED or KILLED)."""

        def end(store: Any) -> None:
            import time

            from mlflow.entities import RunStatus

            store.update_run_info(
                run_id, RunStatus.from_string(status), end_time or int(time.time() * 1000), None
            )

        await self.tracking(f"ending run {run_id}", end)

    async def delete_run(self, run_id: str) -> None:
        """Mark a run deleted (MLflow keeps it until garbage collection)."""
        await self.tracking(f"deleting run {run_id}", lambda s: s.delete_run(run_id))

    async def metric_history(self, run_id: str, key: str) -> list[Any]:
        """Every point of metric ``key`` of a run (``mlflow.entities.Metric``)."""
        return await self.tracking(
            f"reading metric '{key}' of run {run_id}",
            lambda s: list(s.get_metric_history(run_id, key)),
        )


__all__ = ["MAX_PAGE", "KnowledgeClient"]
