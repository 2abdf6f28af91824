"""The core's parts, each built alone with the few functions it is given (no runtime)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scanflow_agents import (
    Agent,
    Call,
    Decision,
    Event,
    Observation,
    Rejected,
    actuator,
    chains,
    rule,
    sensor,
)
from scanflow_agents._core.dispatching import Dispatcher
from scanflow_agents._core.guards import CallStore
from scanflow_agents._core.knowing import Knowledge
from scanflow_agents._core.reacting import Reactor
from scanflow_agents._core.recording import Recorder, Sink
from scanflow_agents._core.scheduling import Scheduler
from scanflow_agents.messages import Envelope, Reply, utcnow
from scanflow_agents.settings import AgentSettings, HandlerSettings, Settings
from scanflow_agents.subjects import Subjects
from scanflow_agents.testing import eventually
from scanflow_agents.transports.memory import MemoryBroker
from scanflow_agents.transports.streams import StreamSpec


class Records:
    """What the recorder would have stored: a stand-in for ``Recorder.record``."""

    def __init__(self) -> None:
        self.kept: list[Envelope] = []
        self.kinds: list[str] = []

    async def __call__(
        self,
        kind: str,
        name: str,
        payload: dict[str, Any],
        *,
        correlation_id: str,
        causation_id: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        envelope = Envelope(
            **({"id": event_id} if event_id else {}),
            kind="event",
            source="test",
            target=name,
            payload=payload,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        self.kept.append(envelope)
        self.kinds.append(kind)
        return envelope


class Calls:
    """What the decisions asked for: a stand-in for ``AgentRuntime.call``."""

    def __init__(self, refuse: bool = False) -> None:
        self.made: list[tuple[str | None, str, dict[str, Any], chains.Chain]] = []
        self.refuse = refuse

    async def __call__(
        self,
        agent: str | None,
        actuator: str,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> Any:
        self.made.append((agent, actuator, params, chains.current()))
        if self.refuse:
            raise Rejected("cooling down")
        return "done"


class Hot(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = 20
        self.seen: list[Observation | Event] = []

    @sensor(every=3600)
    async def temp(self) -> int | None:
        return self.temperature if self.temperature >= 0 else None

    @rule("temp")
    async def cool(self, observation: Observation) -> Decision | None:
        self.seen.append(observation)
        if observation.value < 30:
            return None
        return Decision(action="cool", calls=[Call(agent="fan", actuator="spin", params={"n": 2})])

    @rule(on="weather.*")
    async def weather(self, event: Event) -> None:
        self.seen.append(event)

    @actuator()
    async def spin(self, n: int) -> int:
        return n * 10


def reactor(agent: Agent, calls: Calls, records: Records, paused: str | None = None) -> Reactor:
    return Reactor(
        agent,
        handlers=HandlerSettings(),
        record=records,
        call=calls,
        refusal=lambda sensor: paused,
    )


async def test_reactor_records_observation_decision_and_calls_in_one_chain() -> None:
    agent, calls, records = Hot(), Calls(), Records()
    part = reactor(agent, calls, records)
    assert await part.run_sensor("temp") is not None
    assert records.kinds == ["observation"]  # 20 degrees: no decision
    agent.temperature = 35
    observation = await part.run_sensor("temp")
    assert observation is not None
    assert records.kinds == ["observation", "observation", "decision"]
    recorded_observation, decision = records.kept[1], records.kept[2]
    # The rule received the recorded event's id; the decision names it as its cause.
    assert observation.id == recorded_observation.id
    assert agent.seen[-1] == observation
    assert decision.causation_id == observation.id
    assert decision.correlation_id == observation.correlation_id
    # The call is made in the decision's chain.
    (target, actuator_id, params, chain) = calls.made[0]
    assert (target, actuator_id, params) == ("fan", "spin", {"n": 2})
    assert chain == (observation.correlation_id, decision.id)
    assert part.rule_states["cool"].decisions == 1


async def test_reactor_skips_while_refused_and_counts_refused_calls_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent, calls, records = Hot(), Calls(refuse=True), Records()
    assert await reactor(agent, calls, records, paused="paused").run_sensor("temp") is None
    assert records.kinds == []
    assert reactor(agent, calls, records).sensor_states["temp"].skipped == 0
    part = reactor(agent, calls, records)
    agent.temperature = 40
    with caplog.at_level("INFO", logger="scanflow_agents.reacting"):
        await part.run_sensor("temp")
    # A guard saying no is logged at INFO, not as an error; the decision stands.
    refused = [r for r in caplog.records if "failed after" in r.getMessage()]
    assert [r.levelname for r in refused] == ["INFO"]
    assert part.rule_states["cool"].decisions == 1


async def test_reactor_runs_event_rules_in_the_events_chain() -> None:
    agent, calls, records = Hot(), Calls(), Records()
    part = reactor(agent, calls, records)
    event = Event(
        id="e-1", topic="weather.rain", source="x", payload={}, time=utcnow(), correlation_id="c-1"
    )
    assert await part.run_rule(agent.rules["weather"], event, "c-1", "e-1") is None
    assert agent.seen == [event]
    assert part.rule_states["weather"].runs == 1


class Parts:
    """A dispatcher built alone: a recorder and a call store on an in-memory bus."""

    def __init__(self, agent: Agent, refusal: str | None = None) -> None:
        transport = MemoryBroker(streams=[StreamSpec("T", ("scanflow.t.events.>",))]).connect()
        self.recorder = Recorder(agent.name, transport, Subjects("t"), [])
        store = CallStore(transport, "calls", agent=agent.name, instance="i1", window=60)
        self.tasks: list[asyncio.Task[Any]] = []
        self.part = Dispatcher(
            agent,
            AgentSettings(),
            recorder=self.recorder,
            store=store,
            spawn=lambda coro, name: self.tasks.append(asyncio.create_task(coro, name=name)),
            alive=self.alive,
            refusal=lambda: refusal,
        )

    async def alive(self, instance: str) -> bool:
        return instance == "i1"

    async def __aenter__(self) -> Parts:
        self.tasks.append(asyncio.create_task(self.recorder.run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def kinds(self) -> list[str]:
        return [item.subject.split(".")[3] for item in self.recorder.backlog]


async def test_dispatcher_validates_executes_records_then_replies() -> None:
    async with Parts(Hot()) as parts:
        part = parts.part
        call = Envelope(kind="call", source="caller", payload={"params": {"n": 3}})
        reply = await part.call_local("spin", call)
        assert reply == Reply(ok=True, result=30)
        # The reply came once the record was stored: nothing is left queued.
        assert parts.kinds() == []
        assert parts.recorder.counts == {"action": 1}
        bad = Envelope(kind="call", source="caller", payload={"params": {"n": "many"}})
        reply = await part.call_local("spin", bad)
        assert reply.error is not None
        assert (reply.error.code, reply.error.field) == ("bad_input", "n")
        assert part.executions == {"spin": 1}
        assert parts.recorder.counts == {"action": 1}  # bad input: nothing was attempted


async def test_dispatcher_refuses_while_its_refusal_says_so() -> None:
    async with Parts(Hot(), refusal="paused: test") as parts:
        call = Envelope(kind="call", source="c", payload={"params": {"n": 1}})
        reply = await parts.part.call_local("spin", call)
        assert reply.error is not None
        assert reply.error.code == "rejected"
        assert "paused: test" in reply.error.message


async def test_scheduler_runs_time_sensors_through_the_given_function() -> None:
    ran: list[str] = []

    class Ticking(Agent):
        @sensor(every=0.05)
        async def tick(self) -> None:
            return None

        @sensor(on="never.*")
        async def evented(self, event: Event) -> None:
            return None

    async def run(sensor_id: str) -> None:
        ran.append(sensor_id)

    agent = Ticking()
    part = Scheduler(agent.name, agent.sensors.values(), run)
    part.start()
    try:
        await eventually(lambda: len(ran) >= 2)
        assert set(ran) == {"tick"}  # event sensors are not scheduled
        assert part.next_run("tick") is not None
        assert part.next_run("evented") is None
    finally:
        part.stop()
        part.stop()  # idempotent
    count = len(ran)
    await asyncio.sleep(0.15)
    assert len(ran) == count


async def test_knowledge_without_mlflow_recording_adds_no_sink() -> None:
    settings = Settings.defaults()
    settings.mlflow.record = False
    sinks: list[Sink] = []
    part = Knowledge("hot", settings, MemoryBroker().connect(), sinks)
    await part.start()
    assert sinks == []
    assert part.bucket == f"scanflow-cursors-{settings.namespace}"
    await part.close()


async def test_an_agent_runs_in_one_runtime_at_a_time() -> None:
    agent, broker = Hot(), MemoryBroker()
    assert not agent.is_running
    async with agent.running(broker.connect(), schedule=False) as first:
        assert agent.runtime is first
        with pytest.raises(RuntimeError, match="'hot' is already running"):
            await agent.running(broker.connect(), schedule=False).start()
        assert agent.runtime is first  # the refused start detached nothing
        assert agent.is_running
    assert not agent.is_running
    with pytest.raises(RuntimeError, match="is not running"):
        _ = agent.runtime
