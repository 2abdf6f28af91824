"""The pod's HTTP side: liveness, readiness and Prometheus metrics of ``scanflow run``.

Why aiohttp's server: it runs on the agents' own event loop (no thread, no
second loop), so a probe that answers proves that loop is not blocked, and
readiness reads the runtimes' state directly instead of through locks. It is
small (no ASGI stack, no worker model) and it is already the HTTP library of
the field's tooling, so the ``pod`` extra adds little. The model server's
FastAPI and uvicorn would work, but would bring their own loop management into
a process whose loop belongs to the agents.

Endpoints (all ``GET``):

- ``/livez``: 200 while the process's guarded loops run; 503 once one of them
  died (a heartbeat or recorder loop that ended): restarting the pod is the
  remedy. That the probe is answered at all shows the event loop is alive.
- ``/readyz``: 200 when connected to NATS, every agent started and
  subscribed, and the process is not draining; 503 otherwise, with the reason.
- ``/metrics``: the Prometheus text format.

Both probes answer JSON naming each agent's state, so ``curl`` tells why.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from scanflow_agents.runtime.metering import PrometheusInstruments

from scanflow_agents import Agent
from scanflow_agents.transports.base import Transport

logger = logging.getLogger("scanflow_agents.runtime.probing")


class Probes:
    """The HTTP server of one agent process, and the state its probes report."""

    def __init__(
        self, agents: list[Agent], instruments: PrometheusInstruments, *, host: str, port: int
    ) -> None:
        self.agents = agents
        self.instruments = instruments
        self.host = host
        self.port = port
        self.transport: Transport | None = None
        self.draining = False
        self._runner: web.AppRunner | None = None

    # -- state ---------------------------------------------------------------------------

    def watch(self, transport: Transport) -> None:
        """The connection the agents use: readiness needs it up; metrics count its messages."""
        self.transport = transport
        self.instruments.watch(self.agents, transport)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the process serves, and why (or why not)."""
        agents = {agent.name: _state(agent) for agent in self.agents}
        connected = self.transport is not None and self.transport.connected
        reasons = []
        if self.draining:
            reasons.append("draining: the process is stopping")
        if not connected:
            reasons.append("not connected to NATS")
        reasons += [
            f"agent {name!r} is {state}" for name, state in agents.items() if state != "ready"
        ]
        return not reasons, {"ready": not reasons, "reasons": reasons, "agents": agents}

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the process's loops run (a dead one will not come back by itself)."""
        broken = [f"{agent}:{loop}" for agent, loop in self.instruments.broken_loops]
        return not broken, {"alive": not broken, "broken_loops": broken}

    # -- server --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0: a free one, then read :attr:`port`)."""
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        # access_log=None: probes every few seconds would drown the agents' own log.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                f"cannot serve probes and metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        logger.info(
            "probes and metrics on http://%s:%d (/livez /readyz /metrics)", self.host, self.port
        )

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the port chosen when 0 was asked for)."""
        return self.host, self.port

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _livez(self, request: web.Request) -> web.Response:
        ok, body = self.liveness()
        return web.json_response(body, status=200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, body = self.readiness()
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.instruments.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _state(agent: Agent) -> str:
    """``ready``, or the runtime's state (``starting``, ``stopping``...) when it is not."""
    if not agent.is_running:
        return "not started"
    health = agent.runtime.health()
    if health.ready:
        return "ready"
    if health.state != "running":
        return health.state
    waiting = agent.unready()
    return f"not ready: {'; '.join(waiting)}" if waiting else "not ready (a loop died)"
