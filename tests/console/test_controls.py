"""Control messages on both buses: refusals, bad input, approvals held and decided."""

from __future__ import annotations

import time

import pytest

from scanflow_agents import BadInput, NotFound, Rejected, Unavailable
from scanflow_agents.controls import Controls
from scanflow_agents.messages import Envelope
from scanflow_agents.settings import Settings
from scanflow_agents.testing import AgentHarness, eventually

from .operated import Gate, Scaler


async def test_control_ops_can_be_refused_and_check_their_input(bus: str | None) -> None:
    # The actuators' allow-list decides for control ops as well: `control.<op>`.
    settings = Settings.defaults()
    settings.agent.allow = {"gate.control.pause": ["operator:alice"]}
    async with AgentHarness(Scaler(), Gate(), nats_url=bus, settings=settings) as h:
        controls = Controls(h.client, wait=0.5)

        def only_admins(op: str, request: Envelope) -> str | None:
            return None if request.source == "admin" else f"{request.source} may not {op}"

        h.runtime("scaler").controller.authorize = only_admins
        with pytest.raises(Rejected, match="caller 'harness' is not allowed"):
            await controls.pause("gate")
        assert await controls.approvals("gate") == []  # ops not listed stay open
        with pytest.raises(Rejected, match="pause on agent 'scaler' refused: harness may not"):
            await controls.pause("scaler")
        assert not h.runtime("scaler").controls().paused.on
        h.client.name = "admin"
        await controls.pause("scaler")
        paused = h.runtime("scaler").controls().paused
        assert (paused.on, paused.reason, paused.by) == (True, "paused by admin", "admin")
        await controls.resume("scaler")
        assert not h.runtime("scaler").controls().paused.on

        with pytest.raises(BadInput) as bad:
            await controls.dry_run("scaler", "yes")  # type: ignore[arg-type]
        assert bad.value.field == "on"
        with pytest.raises(NotFound, match="has no sensor 'nope'"):
            await controls.run_sensor("scaler", "nope")
        with pytest.raises(Unavailable, match="no agent 'ghost'"):
            await controls.pause("ghost")


async def test_approvals_are_held_listed_and_rejected(bus: str | None) -> None:
    Gate.deployed = []
    async with AgentHarness(Gate(), nats_url=bus) as h:
        controls = Controls(h.client, wait=0.5)
        observation = await controls.run_sensor("gate", "candidate")
        (waiting,) = await controls.approvals()
        assert waiting.correlation_id == observation["correlation_id"]
        with pytest.raises(NotFound, match="no approval 'nope' waits on agent 'gate'"):
            await controls.approve("gate", "nope", reason="typo")
        with pytest.raises(BadInput) as no_reason:
            await controls.reject("gate", waiting.id, reason=" ")
        assert no_reason.value.field == "reason"
        rejected = await controls.reject("gate", waiting.id, reason="not this week")
        assert rejected["approved"] is False
        assert await controls.approvals() == []
        await h.settle()
        await eventually(lambda: bool(h.records("control", "gate", "reject")))
        (record,) = h.records("control", "gate", "reject")
        assert record["payload"]["reason"] == "not this week"
        assert record["correlation_id"] == waiting.correlation_id
        assert Gate.deployed == []  # rejected: never carried out


async def test_control_ops_return_once_every_known_replica_answered(bus: str | None) -> None:
    Gate.deployed = []
    async with AgentHarness(Gate(), nats_url=bus) as h:
        controls = Controls(h.client, wait=3.0)  # the wait is a bound, not a delay
        await controls.run_sensor("gate", "candidate")
        started = time.monotonic()
        (waiting,) = await controls.approvals()  # discovery (1.5 s here), then the listing
        assert controls.replicas == {"gate": 1}
        assert time.monotonic() - started < 1.5 + 1.0
        started = time.monotonic()
        await controls.approve("gate", waiting.id, reason="its one replica answered")
        assert time.monotonic() - started < 1.0  # not 3 s
        started = time.monotonic()
        assert len(await controls.pause("gate")) == 1
        assert time.monotonic() - started < 1.0
