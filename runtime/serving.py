"""Serve agents in this process until told to stop: the body of ``scanflow run``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack

from scanflow_agents import Agent, Settings
from scanflow_agents.clients import connect_transport
from scanflow_agents.redaction import redact

logger = logging.getLogger("scanflow_agents.runtime")


async def serve(
    agents: list[Agent], settings: Settings, *, stop: asyncio.Event | None = None
) -> None:
    """Run ``agents`` on one shared NATS connection until ``stop`` is set or SIGINT/SIGTERM.

    Every agent gets ``settings``; the connection is drained once all agents
    have stopped, so nothing accepted is lost on the way out.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    transport = await connect_transport(settings, name="+".join(a.name for a in agents))
    try:
        async with AsyncExitStack() as stack:
            for agent in agents:
                agent.settings = settings
                await stack.enter_async_context(agent.running(transport))
            names = ", ".join(a.name for a in agents)
            logger.info(
                "serving %s in namespace %r on %s",
                names,
                settings.namespace,
                redact(settings.nats.url),
            )
            await stop.wait()
            logger.info("stopping %s", names)
    finally:
        await transport.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
