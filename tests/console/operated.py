"""Agents that people operate in the console and one-shot command tests.

Loaded in the tests' own process and, by path, by ``scanflow run`` subprocesses
(with ``examples/approval_gate.py`` beside it for the gate).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

from scanflow_agents import Agent, actuator, sensor


def _example(name: str) -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scanflow_example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The gate is the users' example itself, so the console tests operate what the
# guide shows. Loaded under a name of its own, it is not an agent defined here:
# `scanflow run` of this file starts the scaler only.
Gate: Any = _example("approval_gate").Gate


class Scaler(Agent):
    """Scales a service; its load sensor ticks every second."""

    replicas = 1

    @sensor(every=1.0)
    async def load(self) -> dict[str, float]:
        """The request rate of the service."""
        return {"rps": 42.0}

    @actuator()
    async def scale(self, replicas: int, service: str = "digits") -> dict[str, object]:
        """Set the number of replicas of a service.

        Args:
            replicas: the wanted number of replicas.
            service: the service to scale.
        """
        self.replicas = replicas
        return {"service": service, "replicas": replicas}

    # Guards loose enough for the tests that call it, shown in the agent's view.
    @actuator(timeout=45, cooldown=0.1, rate="100/m")
    async def drain(self, seconds: float) -> dict[str, float]:
        """Drain the service's connections (slowly).

        Args:
            seconds: how long draining takes.
        """
        await asyncio.sleep(seconds)
        return {"drained_after": seconds}
