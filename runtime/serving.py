"""Serve agents in this process until told to stop: the body of ``scanflow run``.

In a pod (``settings.http.port`` set) the process also serves its probes and
metrics (:mod:`.probing`), and stops in the order Kubernetes expects on
SIGTERM: readiness turns false first, then every agent drains (no new calls
reach it, accepted ones are answered, its records are stored), then the NATS
connection drains and the process exits 0. Each agent's stop is bounded by
``settings.agent.shutdown_timeout``: keep the pod's grace period above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from scanflow_agents import Agent, Settings
from scanflow_agents.clients import connect_transport
from scanflow_agents.redaction import redact

if TYPE_CHECKING:
    from scanflow_agents.runtime.probing import Probes

logger = logging.getLogger("scanflow_agents.runtime")


async def serve(
    agents: list[Agent], settings: Settings, *, stop: asyncio.Event | None = None
) -> None:
    """Run ``agents`` on one shared NATS connection until ``stop`` is set or SIGINT/SIGTERM.

    Every agent gets ``settings``; the connection is drained once all agents
    have stopped, so nothing accepted is lost on the way out. With
    ``settings.http.port`` set, probes and metrics are served from before the
    connection is made (liveness answers during a slow start) until the end.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    probes = await _start_probes(agents, settings)
    try:
        transport = await connect_transport(settings, name="+".join(a.name for a in agents))
        try:
            if probes is not None:
                probes.watch(transport)
            instruments = probes.instruments if probes is not None else None
            async with AsyncExitStack() as stack:
                for agent in agents:
                    agent.settings = settings
                    runtime = agent.running(transport, instruments=instruments)
                    await stack.enter_async_context(runtime)
                names = ", ".join(a.name for a in agents)
                logger.info(
                    "serving %s in namespace %r on %s",
                    names,
                    settings.namespace,
                    redact(settings.nats.url),
                )
                await stop.wait()
                if probes is not None:
                    probes.draining = True  # unready before anything stops
                logger.info("stopping %s", names)
        finally:
            await transport.close()
    finally:
        if probes is not None:
            await probes.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _start_probes(agents: list[Agent], settings: Settings) -> Probes | None:
    if settings.http.port is None:
        return None
    # Imported here: aiohttp and prometheus-client come with the 'pod' extra.
    from scanflow_agents.runtime.metering import PrometheusInstruments
    from scanflow_agents.runtime.probing import Probes

    probes = Probes(
        agents, PrometheusInstruments(), host=settings.http.host, port=settings.http.port
    )
    await probes.start()
    return probes
