"""Online services on this machine: N model-server processes on one port.

The replicas of a service all listen on the service's port with
``SO_REUSEPORT``; the kernel spreads new connections among them, so there is
no proxy to run and no hop to pay. Each replica also listens on a private
admin port, the only way to ask one particular replica for its health.

With ``standby_replicas`` set, that many more replicas are kept started, with
the model loaded, outside the rotation (listening on their admin port only):
a scale-out activates them (they open the shared port) in milliseconds
instead of starting processes, and new standbys are started in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from scanflow_agents._kit.tasks import guarded, stop
from scanflow_agents.platforms.local.processes import (
    free_port,
    http_get,
    http_request,
    spawn,
    terminate,
    wait_healthy,
)
from scanflow_agents.platforms.local.settings import LocalPlatformSettings
from scanflow_agents.platforms.results import PlatformError, ReplicaStatus, ServiceStatus
from scanflow_agents.serving.config import ServingConfig
from scanflow_agents.workflows import ServiceNode

logger = logging.getLogger(__name__)


@dataclass
class Replica:
    """One model-server process."""

    name: str
    process: asyncio.subprocess.Process
    admin_port: int
    model_uri: str
    started_at: float


class ReplicaSet:
    """The replicas of one service node; changes to them are serialised."""

    def __init__(
        self, workflow: str, node: ServiceNode, settings: LocalPlatformSettings, python: str
    ) -> None:
        self.workflow = workflow
        self.node = node
        self.settings = settings
        self.python = python
        self.port = node.port or free_port(settings.host)
        self.model_uri = node.model_uri
        self.replicas: list[Replica] = []
        self.standby: list[Replica] = []  # started and loaded, outside the rotation
        self._filling: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.logs = settings.base_dir.resolve() / "services" / workflow / node.name
        self._numbers = itertools.count(1)

    @property
    def url(self) -> str:
        """The address clients send requests to."""
        return f"http://{self.settings.host}:{self.port}"

    async def scale(self, count: int) -> int:
        """Start or stop replicas until ``count`` run; returns how many changed.

        Standby replicas are activated first; the others start together. The
        newest are stopped first.
        """
        self._keep_warm()
        if count > len(self.replicas):
            warm = await self._activate(count - len(self.replicas))
            self.replicas += warm
            self._keep_warm()  # replace the ones just taken
            started = await asyncio.gather(
                *(self._start(self.model_uri) for _ in range(count - len(self.replicas))),
                return_exceptions=True,
            )
            failures = [r for r in started if isinstance(r, BaseException)]
            self.replicas += [r for r in started if isinstance(r, Replica)]
            if failures:
                raise PlatformError(
                    "failed",
                    f"service {self.workflow}/{self.node.name}: "
                    f"{len(failures)} replica(s) did not start: {failures[0]}",
                )
            return len(warm) + len(started)
        doomed = self.replicas[count:]
        self.replicas = self.replicas[:count]
        await asyncio.gather(*(self._stop(r) for r in doomed))
        return len(doomed)

    async def _activate(self, wanted: int) -> list[Replica]:
        """Up to ``wanted`` standby replicas of the current model, now in the rotation."""
        ready = [r for r in self.standby if r.model_uri == self.model_uri]
        active = []
        for replica in ready[:wanted]:
            self.standby.remove(replica)
            try:
                status, _ = await http_request(
                    self.settings.host, replica.admin_port, "POST", "/activate", timeout=5.0
                )
            except (OSError, TimeoutError):
                status = 0
            if status == 200:
                active.append(replica)
            else:  # a standby that cannot join is of no use: a cold start replaces it
                await self._stop(replica)
        return active

    def _keep_warm(self) -> None:
        """Start the background task that keeps ``standby_replicas`` ready, if not running."""
        if self.settings.standby_replicas and (self._filling is None or self._filling.done()):
            name = f"standby replicas of {self.workflow}/{self.node.name}"
            self._filling = guarded(self._fill(), name=name, logger=logger)

    async def _fill(self) -> None:
        while True:
            # Standbys of a model no longer served (a redeploy) are replaced.
            for stale in [r for r in self.standby if r.model_uri != self.model_uri]:
                self.standby.remove(stale)
                await self._stop(stale)
            missing = self.settings.standby_replicas - len(self.standby)
            if missing <= 0:
                return
            # Together: one after the other, the last would be ready only after all the
            # others' start times, and a scale-out meanwhile would start cold.
            started = await asyncio.gather(
                *(self._start(self.model_uri, standby=True) for _ in range(missing)),
                return_exceptions=True,
            )
            self.standby += [r for r in started if isinstance(r, Replica)]
            for failure in started:
                if isinstance(failure, BaseException):
                    raise failure  # logged by the guarded task; the next change retries

    async def redeploy(self, model_uri: str) -> int:
        """Replace replicas one by one with ones serving ``model_uri``.

        A new replica is started and healthy before an old one stops, so the
        service never has fewer ready replicas than before. If a new replica
        fails, the rollout stops there: the old model keeps serving on the
        replicas not yet replaced.

        Returns:
            How many replicas were replaced.
        """
        previous, self.model_uri = self.model_uri, model_uri
        replaced = 0
        for old in [r for r in self.replicas if r.model_uri != model_uri]:
            try:
                new = await self._start(model_uri)
            except Exception as exc:
                self.model_uri = previous if replaced == 0 else model_uri
                raise PlatformError(
                    "failed",
                    f"service {self.workflow}/{self.node.name}: "
                    f"rollout to {model_uri} stopped after {replaced} "
                    f"replica(s): {exc}",
                ) from exc
            self.replicas[self.replicas.index(old)] = new
            await self._stop(old)
            replaced += 1
        self._keep_warm()
        return replaced

    async def status(self) -> ServiceStatus:
        """Probe every replica's health on its admin port."""
        replicas = await asyncio.gather(*(self._probe(r) for r in self.replicas))
        return ServiceStatus(
            workflow=self.workflow,
            node=self.node.name,
            url=self.url,
            model_uri=self.model_uri,
            desired_replicas=len(self.replicas),
            ready_replicas=sum(r.ready for r in replicas),
            replicas=list(replicas),
        )

    async def close(self) -> None:
        """Stop every replica, standbys included."""
        await stop(self._filling)
        doomed, self.replicas = self.replicas + self.standby, []
        self.standby = []
        await asyncio.gather(*(self._stop(r) for r in doomed))

    async def _start(self, model_uri: str, *, standby: bool = False) -> Replica:
        name = f"{self.node.name}-{next(self._numbers)}"
        admin_port = free_port(self.settings.host)
        settings = self.settings
        config = ServingConfig(
            model_uri=model_uri,
            host=self.settings.host,
            port=self.port,
            reuse_port=True,
            admin_port=admin_port,
            tracking_uri=self.settings.tracking_uri,
            # A fleet of replicas logging their own numbers would flood MLflow.
            report_tracking_uri=settings.tracking_uri if settings.replica_reports else None,
            registry_uri=self.settings.registry_uri,
            nats_url=self.settings.nats_url,
            namespace=self.settings.namespace,
            workflow=self.workflow,
            node=self.node.name,
            replica=name,
            report_interval=self.settings.report_interval,
            graceful_timeout=self.settings.stop_timeout,
            latency_p95_ms=self.node.latency_p95_ms,
            standby=standby,
        )
        argv = [self.python, "-m", "scanflow_agents.serving", *config.to_args()]
        started = time.monotonic()
        process = await spawn(argv, env=self._env(), cwd=None, log_path=self.logs / f"{name}.log")
        try:
            await wait_healthy(process, self.settings.host, admin_port, self.settings.start_timeout)
        except BaseException as exc:
            await terminate(process, self.settings.stop_timeout)
            if isinstance(exc, Exception):
                raise PlatformError(
                    "failed",
                    f"replica {name} of {self.workflow}/"
                    f"{self.node.name} serving {model_uri}: {exc}; "
                    f"see {self.logs / f'{name}.log'}",
                ) from exc
            raise
        logger.info(
            "replica %s of %s/%s ready in %.1f s (pid %d, %s%s)",
            name,
            self.workflow,
            self.node.name,
            time.monotonic() - started,
            process.pid,
            model_uri,
            ", standby" if standby else "",
        )
        return Replica(name, process, admin_port, model_uri, time.time())

    async def _stop(self, replica: Replica) -> None:
        # SIGTERM: the server drains its listener, finishes in-flight requests
        # and sends its last report before it exits.
        code = await terminate(replica.process, self.settings.stop_timeout + 5)
        logger.info(
            "replica %s of %s/%s stopped (exit code %s)",
            replica.name,
            self.workflow,
            self.node.name,
            code,
        )

    async def _probe(self, replica: Replica) -> ReplicaStatus:
        ready = False
        if replica.process.returncode is None:
            with contextlib.suppress(OSError, TimeoutError):
                ready = (
                    await http_get(self.settings.host, replica.admin_port, "/health", timeout=2.0)
                )[0] == 200
        return ReplicaStatus(
            replica=replica.name,
            pid=replica.process.pid,
            model_uri=replica.model_uri,
            alive=replica.process.returncode is None,
            ready=ready,
            admin_url=f"http://{self.settings.host}:{replica.admin_port}",
            started_at=replica.started_at,
        )

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The replicas run this very package, even when it is not installed
        # (a source checkout): put its folder first on their path.
        source = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        env.update(self.node.env)
        return env
