"""An approval gate: an agent that holds each deployment it decides on for a person.

Run it beside the quickstart's agents, with an embedded NATS server:

    scanflow run examples/approval_gate.py examples/quickstart.py --embedded-nats

then approve or reject what it holds from the console (``a``, then ``y`` or
``n``) or with ``scanflow approvals`` and ``scanflow approve ID --reason ...``.
The guide "Approve decisions from the console" walks through it.
"""

from __future__ import annotations

from scanflow_agents import Agent, Decision, Observation, rule, sensor


class Gate(Agent):
    """Holds every deployment it decides on until a person approves it."""

    deployed: list[str] = []

    @sensor(every=3600.0)
    async def candidate(self) -> dict[str, str]:
        """A new model version to deploy."""
        # A stand-in for a real source, such as the newest version in a model registry.
        return {"model": "models:/digits/7"}

    @rule("candidate")
    async def deploy_candidate(self, observation: Observation) -> Decision:
        model = observation.value["model"]

        # Runs only once someone approves; a rejection drops it, and the
        # reason given is recorded in this decision's chain either way.
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
