"""The operator's switches and the approvals, owned by the core: who changes them, and when."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scanflow_agents import Agent, Observation, Rejected, actuator, rule, sensor
from scanflow_agents._core.approvals import Approvals
from scanflow_agents._core.switches import ControlState
from scanflow_agents.controls import Controls
from scanflow_agents.testing import AgentHarness, eventually

from .test_parts import Records

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
        assert (heartbeat.dry_run, list(heartbeat.paused_sensors)) == (True, ["load"])
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


# -- approvals: held by a handler, expired by the core ---------------------------------------


class Holder(Agent):
    """Holds one decision per timeout policy, each for a second."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.done: list[tuple[str, str]] = []

    @sensor(every=3600)
    async def candidate(self) -> str:
        return "v7"

    @rule("candidate")
    async def hold_all(self, observation: Observation) -> None:
        for policy in ("approve", "reject", "hold"):

            async def approved(why: str, policy: str = policy) -> str:
                self.done.append((policy, f"approved: {why}"))
                return "deployed"

            async def rejected(why: str, policy: str = policy) -> None:
                self.done.append((policy, f"rejected: {why}"))

            self.approvals.hold(
                "deploy",
                f"deploy {observation.value} ({policy})",
                approved,
                on_reject=rejected,
                approval_id=policy,
                timeout=1.0,
                on_timeout=policy,
            )


@pytest.mark.fake_clock
async def test_the_core_applies_each_holds_timeout_policy_on_the_loop_clock(
    bus: str | None,
) -> None:
    holder = Holder()
    async with AgentHarness(holder, nats_url=bus) as h:
        observation = await h.run_sensor("holder", "candidate")
        assert observation is not None
        loop = asyncio.get_running_loop()
        held_at = loop.time()
        await asyncio.sleep(0.8)
        assert len(holder.approvals) == 3  # nothing expires early
        assert holder.done == []
        await eventually(lambda: len(holder.done) == 2)
        assert loop.time() - held_at >= 1.0
        why = "nobody decided within 1 s"
        assert sorted(holder.done) == [
            ("approve", f"approved: {why}"),
            ("reject", f"rejected: {why}"),
        ]
        # `hold` keeps waiting for a person, overdue; nothing else expires it again.
        (overdue,) = await Controls(h.client, wait=0.5).approvals("holder")
        assert (overdue.id, overdue.expires_in_s) == ("hold", 0.0)
        await h.settle()
        expired = {r["payload"]["approval"]: r for r in h.records("control", "holder", "expired")}
        assert sorted(expired) == ["approve", "hold", "reject"]
        assert {r["payload"]["policy"] for r in expired.values()} == {"approve", "reject", "hold"}
        # In the chain of the decision that held them, as an operator's decision is.
        assert {r["correlation_id"] for r in expired.values()} == {observation.correlation_id}
        (done,) = h.records("control", "holder", "approve-done")
        assert done["payload"]["result"] == "deployed"
        assert done["causation_id"] == expired["approve"]["id"]
        # A person still decides the held one, once.
        await Controls(h.client, wait=0.5).approve("holder", "hold", reason="checked")
        await eventually(lambda: len(holder.done) == 3)
        assert holder.done[-1] == ("hold", "approved: checked")


async def test_a_hold_with_an_earlier_deadline_wakes_the_timer() -> None:
    """The timer sleeps until the next deadline; a new, earlier one is not slept through."""
    records, tasks = Records(), set[asyncio.Task[Any]]()

    def spawn(coro: Any, name: str) -> None:
        tasks.add(asyncio.ensure_future(coro))

    async def nothing(why: str) -> None:
        return None

    approvals = Approvals("agent", record=records, spawn=spawn)
    timer = asyncio.ensure_future(approvals.run())
    try:
        approvals.hold("slow", "an hour", nothing, approval_id="late", timeout=3600)
        await asyncio.sleep(0.01)  # the timer now sleeps until the hour is over
        approvals.hold("quick", "a moment", nothing, approval_id="soon", timeout=0.05)
        approvals.hold("never", "no timeout", nothing, approval_id="open")
        decided = approvals.hold("decided", "taken", nothing, approval_id="taken", timeout=0.05)
        assert approvals.take("taken") is decided  # a person decided it first
        await eventually(lambda: bool(records.kept), timeout=2)
        await asyncio.sleep(0.1)
        assert [(e.target, e.payload["approval"]) for e in records.kept] == [("expired", "soon")]
        assert ("late" in approvals, "open" in approvals, "soon" in approvals) == (
            True,
            True,
            False,
        )
    finally:
        timer.cancel()
        await asyncio.gather(timer, *tasks, return_exceptions=True)
