"""The operator's switches, owned by the core: who changes them, and when."""

from __future__ import annotations

from typing import Any

import pytest

from scanflow_agents import Agent, Rejected, actuator, sensor
from scanflow_agents._core.switches import ControlState
from scanflow_agents.controls import Controls
from scanflow_agents.testing import AgentHarness

# -- ControlState alone --------------------------------------------------------------------


def test_control_state_says_why_it_refuses_and_who_switched_what() -> None:
    state = ControlState("watch", dry_run=True)
    first = state.snapshot()
    assert (first.paused.on, first.paused.by) == (False, "settings")
    assert (first.dry_run.on, first.dry_run.by) == (True, "settings")
    assert state.refusal() is None
    assert state.sensor_refusal("load") is None

    state.pause_sensor("load", "noisy", by="operator:alice")
    assert state.sensor_refusal("load") == "sensor 'load' is paused: noisy"
    assert state.sensor_refusal("other") is None
    assert state.refusal() is None  # a sensor's pause does not refuse calls
    state.pause_agent("maintenance", by="operator:bob")
    assert state.refusal() == "agent 'watch' is paused: maintenance"
    assert state.sensor_refusal("other") == "agent 'watch' is paused: maintenance"
    state.set_dry_run(False, by="operator:bob")
    assert state.dry_run() is False

    now = state.snapshot()
    assert now.paused_sensors == ["load"]
    assert (now.paused.by, now.paused.reason) == ("operator:bob", "maintenance")
    assert now.sensors["load"].by == "operator:alice"
    assert now.dry_run.at >= first.dry_run.at
    # A copy: later changes do not show through an earlier snapshot.
    state.resume_sensor("load", by="operator:alice")
    state.resume_agent(by="operator:alice")
    assert now.paused_sensors == ["load"]
    assert now.paused.on
    assert state.snapshot().paused_sensors == []
    assert state.snapshot().sensors["load"].by == "operator:alice"  # who resumed it
    with pytest.raises(AttributeError):
        now.paused.on = False  # type: ignore[misc]


class Watch(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acted: list[int] = []

    @sensor(every=3600)
    async def load(self) -> int:
        return 7

    @actuator()
    async def scale(self, replicas: int) -> int:
        self.acted.append(replicas)
        return replicas


async def test_the_controller_switches_and_the_parts_obey(bus: str | None) -> None:
    watch = Watch()
    async with AgentHarness(watch, nats_url=bus) as h:
        controls = Controls(h.client, wait=2.0, replicas={"watch": 1})  # one answer is all
        runtime = h.runtime("watch")
        await controls.pause("watch", sensor="load", reason="noisy")
        assert await h.run_sensor("watch", "load") is None  # the reactor skips it
        assert await h.call("watch", "scale", replicas=2) == 2  # calls still run
        await controls.dry_run("watch", True)
        result = await h.call("watch", "scale", replicas=3)  # the dispatcher only records
        assert result == {"dry_run": True, "actuator": "scale", "params": {"replicas": 3}}
        assert watch.acted == [2]
        heartbeat = (await h.client.discover())[0]
        assert (heartbeat["dry_run"], heartbeat["paused_sensors"]) == (True, ["load"])
        now = runtime.controls()
        assert (now.dry_run.on, now.dry_run.by) == (True, "harness")
        assert (now.sensors["load"].reason, now.sensors["load"].by) == ("noisy", "harness")

        await controls.pause("watch", reason="maintenance")
        with pytest.raises(Rejected, match="agent 'watch' is paused: maintenance"):
            await h.call("watch", "scale", replicas=4)
        assert runtime.health().state == "paused"
        await controls.resume("watch")
        await controls.resume("watch", sensor="load")
        await controls.dry_run("watch", False)
        assert await h.run_sensor("watch", "load") is not None
        assert await h.call("watch", "scale", replicas=5) == 5
        assert runtime.health().state == "running"
        await h.settle()
        changes = [r["name"] for r in h.records("control", "watch")]
        assert changes == ["pause", "dry-run", "pause", "resume", "resume", "dry-run"]
