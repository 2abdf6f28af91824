"""Approvals outlive the replica that holds them: kept in a bucket, adopted, decided."""

from __future__ import annotations

from typing import Any

import pytest

from scanflow_agents import Agent, Call, Observation, Rejected, actuator, rule, sensor
from scanflow_agents.controls import Controls
from scanflow_agents.settings import Settings
from scanflow_agents.testing import AgentHarness, eventually

MODEL = "models:/digits/7"


class Gate(Agent):
    """Holds a deployment as a call (portable) and a note as a function (not)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deployed: list[str] = []
        self.noted: list[str] = []

    @actuator()
    async def deploy(self, model: str) -> dict[str, str]:
        """Deploy a model."""
        self.deployed.append(model)
        return {"deployed": model}

    @sensor(every=3600.0)
    async def candidate(self) -> dict[str, str]:
        return {"model": MODEL}

    @rule("candidate")
    async def ask(self, observation: Observation) -> None:
        model = observation.value["model"]
        deploy = Call(actuator="deploy", params={"model": model})
        self.approvals.hold("deploy", f"deploy {model}", deploy, approval_id="portable")

        async def note(reason: str) -> None:
            self.noted.append(reason)

        self.approvals.hold("note", "a note in code", note, approval_id="code")


def _settings() -> Settings:
    settings = Settings.defaults()
    settings.agent.lease_ttl = 1.0  # also how often a replica looks for orphans
    return settings


async def _listed(controls: Controls) -> list[tuple[str, str]]:
    return sorted((a.id, a.summary) for a in await controls.approvals("gate"))


async def test_a_restarted_agent_lists_and_decides_what_it_held_before(nats_url: str) -> None:
    async with AgentHarness(nats_url=nats_url, settings=_settings()) as h:
        controls = Controls(h.client)
        before = Gate(settings=h.settings)
        async with before.running(await h.connect("before"), schedule=False) as runtime:
            await controls.run_sensor("gate", "candidate")
            await runtime.settle()
        # Stopped cleanly (as on SIGTERM); a new process of the agent starts.
        after = Gate(settings=h.settings)
        async with after.running(await h.connect("after"), schedule=False):
            assert await _listed(controls) == [
                ("code", "a note in code"),
                ("portable", f"deploy {MODEL}"),
            ]
            approved = await controls.approve("gate", "portable", reason="checked offline")
            assert approved["kind"] == "deploy"
            await eventually(lambda: after.deployed == [MODEL], timeout=10)
            # A function held by the gone process cannot run here: refused, not lost.
            with pytest.raises(Rejected, match="can be rejected, not carried out"):
                await controls.approve("gate", "code", reason="fine")
            await controls.reject("gate", "code", reason="not needed")
            assert await _listed(controls) == []
            await h.wait_for(
                lambda records: any(r.get("name") == "approve-done" for r in records), timeout=10
            )
        assert before.deployed == []
        assert before.noted == []
        kept = await h.client.transport.key_value(h.subjects.approvals_bucket)
        assert await kept.entries("gate") == []  # decided: nothing is kept


async def test_another_replica_takes_over_the_approvals_of_one_that_died(nats_url: str) -> None:
    async with AgentHarness(nats_url=nats_url, settings=_settings()) as h:
        controls = Controls(h.client)
        first, second = Gate(settings=h.settings), Gate(settings=h.settings)
        async with (
            first.running(await h.connect("first"), schedule=False) as dying,
            second.running(await h.connect("second"), schedule=False),
        ):
            await dying.run_sensor("candidate")  # held by the first replica
            await dying.settle()
            assert dying.approvals.listing().approvals
            await dying.transport.abort()  # as kill -9: no release, no last word
            # The survivor adopts them once the holder answers no discovery.
            await eventually(lambda: len(second.runtime.approvals) == 2, timeout=15)
            await controls.approve("gate", "portable", reason="go")
            await eventually(lambda: second.deployed == [MODEL], timeout=10)
        assert first.deployed == []
