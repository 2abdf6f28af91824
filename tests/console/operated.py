"""Agents that people operate in the console and one-shot command tests.

Loaded in the tests' own process and, by path, by ``scanflow run`` subprocesses.
"""

from __future__ import annotations

import asyncio

from scanflow_agents import Agent, Decision, Observation, actuator, rule, sensor


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


class Gate(Agent):
    """Holds every deployment it decides on until a person approves it."""

    deployed: list[str] = []

    @sensor(every=3600.0)
    async def candidate(self) -> dict[str, str]:
        """A new model version to deploy."""
        return {"model": "models:/digits/7"}

    @rule("candidate")
    async def deploy_candidate(self, observation: Observation) -> Decision:
        model = observation.value["model"]

        async def deploy(reason: str) -> dict[str, str]:
            self.deployed.append(model)
            return {"deployed": model}

        approval = self.approvals.hold(
            "deploy", f"deploy {model}", deploy, details={"model": model}
        )
        return Decision(
            action="deploy-awaiting-approval",
            reason=f"{model} is new (approval {approval.id})",
            evidence={"approval": approval.id},
        )
