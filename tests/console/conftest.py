"""Real agents on a real nats-server for the console tests, and the console's settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from scanflow_agents import Settings
from scanflow_agents.testing import AgentHarness

from .operated import Gate, Scaler


def console_settings(url: str, namespace: str, **agent: Any) -> Settings:
    base = Settings.defaults()
    return base.model_copy(
        update={
            "namespace": namespace,
            "nats": base.nats.model_copy(update={"url": url}),
            "agent": base.agent.model_copy(update={"heartbeat_interval": 0.5, **agent}),
        }
    )


@pytest.fixture
async def agents(nats_url: str) -> AsyncIterator[AgentHarness]:
    """A scaler and a gate, running (with their schedules) on the session's nats-server."""
    Gate.deployed = []
    settings = console_settings(nats_url, "placeholder")
    async with AgentHarness(
        Scaler(), Gate(), nats_url=nats_url, schedule=True, settings=settings
    ) as harness:
        yield harness
