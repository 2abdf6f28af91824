"""The namespace's freeze: one switch that stops every action of every agent."""

from __future__ import annotations

import uuid

import pytest

from scanflow_agents import Rejected
from scanflow_agents.controls import Controls
from scanflow_agents.testing import AgentHarness

from .test_budget import Scaler, Trainer


async def test_a_freeze_stops_every_action_of_the_namespace_and_nothing_else(
    bus: str | None,
) -> None:
    scaler, trainer = Scaler(), Trainer()
    async with AgentHarness(scaler, trainer, nats_url=bus) as h:
        controls = Controls(h.client, wait=2.0)
        await controls.discover()
        answers = await controls.freeze(True, reason="a policy runs away")
        assert sorted(a["agent"] for a in answers) == ["scaler", "trainer"]
        for agent in ("scaler", "trainer"):
            with pytest.raises(Rejected, match="frozen by harness: a policy runs away"):
                await h.call(agent, "scale", replicas=3)
        assert await h.call("scaler", "status") == 0  # reads answer
        dry = await h.call("trainer", "scale", {"replicas": 9}, dry_run=True)
        assert dry["dry_run"] is True  # and so do trials
        beats = await h.client.discover(wait=0.3)
        assert {beat.agent for beat in beats if beat.frozen} == {"scaler", "trainer"}
        # Each agent recorded the switch, with who and why.
        await h.settle()
        switched = [e for e in h.events if e["topic"].startswith("control.")]
        assert {e["payload"]["caller"] for e in switched} == {"harness"}
        assert {e["topic"] for e in switched} == {"control.scaler.freeze", "control.trainer.freeze"}

        await controls.freeze(False)
        assert await h.call("scaler", "scale", replicas=3) == 3
        assert (scaler.done, trainer.done) == ([3], [])


async def test_a_replica_that_starts_while_frozen_starts_frozen(nats_url: str) -> None:
    namespace = f"frozen-{uuid.uuid4().hex[:8]}"  # named: kept between the two harnesses
    async with AgentHarness(Scaler(), nats_url=nats_url, namespace=namespace) as h:
        await Controls(h.client, wait=1.0).freeze(True, reason="maintenance")
    # A new process of the namespace: it reads the switch before serving.
    trainer = Trainer()
    async with AgentHarness(trainer, nats_url=nats_url, namespace=namespace) as h:
        with pytest.raises(Rejected, match="frozen by harness: maintenance"):
            await h.call("trainer", "scale", replicas=2)
        await Controls(h.client, wait=1.0).freeze(False)
        assert await h.call("trainer", "scale", replicas=2) == 2
