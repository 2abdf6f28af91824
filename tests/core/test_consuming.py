"""Rules read the stream durably and replicas elect a leader: on the in-memory bus and on NATS.

Each test runs agent runtimes in this process, one connection each, as
replicas in separate processes would; the fault tests in ``tests/faults`` do
the same with real processes and kill -9.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from scanflow_agents import Agent, Call, Decision, Event, actuator, rule, sensor
from scanflow_agents._core.consuming import durable_name
from scanflow_agents._core.running import AgentRuntime
from scanflow_agents.clients import Client
from scanflow_agents.messages import Envelope
from scanflow_agents.settings import Settings
from scanflow_agents.subjects import Subjects
from scanflow_agents.testing import eventually
from scanflow_agents.transports import MemoryBroker, MemoryTransport, Transport
from scanflow_agents.transports.nats import NatsTransport
from scanflow_agents.transports.streams import StreamSpec


class Counter(Agent):
    """Counts ticks with a rule and a sensor; asks the actor to act on each tick."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[int] = []
        self.polls = 0

    @rule(on="tick.*")
    async def count(self, event: Event) -> Decision:
        self.seen.append(event.payload["n"])
        n = event.payload["n"]
        return Decision(action="act", calls=[Call(agent="actor", actuator="act", params={"n": n})])

    @sensor(every=0.1)
    async def poll(self) -> None:
        self.polls += 1


class Actor(Agent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acted: list[int] = []

    @actuator()
    async def act(self, n: int) -> int:
        self.acted.append(n)
        return n


class Bus:
    """Connections to one bus (memory or NATS) in a fresh namespace, and the runtimes on them."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.namespace = f"dur-{uuid.uuid4().hex[:8]}"
        self.settings = Settings.defaults().model_copy(update={"namespace": self.namespace})
        self.settings.agent = self.settings.agent.model_copy(update={"lease_ttl": 2.0})
        self.subjects = Subjects(self.namespace)
        self.broker = MemoryBroker()
        self.transports: list[Transport] = []
        self.runtimes: list[AgentRuntime] = []

    async def connect(self) -> Transport:
        if self.url is None:
            transport: Transport = MemoryTransport(self.broker)
        else:
            transport = await NatsTransport.connect(
                self.settings.nats.model_copy(update={"url": self.url}),
                streams=[StreamSpec(self.settings.stream_name, (self.subjects.all_events,))],
            )
        self.transports.append(transport)
        return transport

    async def run(self, agent: Agent) -> AgentRuntime:
        agent.settings = self.settings
        runtime = agent.running(await self.connect())
        await runtime.start()
        self.runtimes.append(runtime)
        return runtime

    async def ticks(self, numbers: range) -> None:
        writer = self.transports[0] if self.transports else await self.connect()
        for n in numbers:
            envelope = Envelope(kind="event", source="test", target="tick.a", payload={"n": n})
            await writer.publish_durable(self.subjects.event("tick.a"), envelope.encode())

    async def close(self) -> None:
        for runtime in self.runtimes:
            await runtime.stop()
        for transport in self.transports:
            await transport.close()


@pytest.fixture
async def bus_of(bus: str | None) -> AsyncIterator[Callable[[], Awaitable[Bus]]]:
    made: list[Bus] = []

    async def make() -> Bus:
        made.append(Bus(bus))
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def test_a_rule_sees_events_stored_before_it_started_and_after(
    bus_of: Callable[[], Awaitable[Bus]],
) -> None:
    bus = await bus_of()
    await bus.ticks(range(5))
    counter, actor = Counter(), Actor()
    await bus.run(actor)
    await bus.run(counter)
    await bus.ticks(range(5, 10))
    await eventually(lambda: len(actor.acted) == 10, timeout=10)
    assert counter.seen == list(range(10))
    assert actor.acted == list(range(10))


async def test_a_restarted_agent_misses_nothing_and_repeats_nothing(
    bus_of: Callable[[], Awaitable[Bus]],
) -> None:
    bus = await bus_of()
    first = Counter()
    runtime = await bus.run(first)
    await bus.ticks(range(3))
    await eventually(lambda: len(first.seen) == 3, timeout=10)
    await runtime.stop()
    await bus.ticks(range(3, 8))  # stored while nobody reads
    second = Counter()
    again = await bus.run(second)
    await bus.ticks(range(8, 10))
    await eventually(lambda: len(second.seen) == 7, timeout=10)
    await asyncio.sleep(0.3)
    assert first.seen + second.seen == list(range(10))
    consumer = again.consumers.summary()["tick.*"]
    assert consumer["durable"] == durable_name("counter", "tick.*")
    assert consumer["handled"] == 7


async def test_an_event_delivered_twice_is_handled_once(
    bus_of: Callable[[], Awaitable[Bus]],
) -> None:
    bus = await bus_of()
    counter = Counter()
    runtime = await bus.run(counter)
    envelope = Envelope(kind="event", source="test", target="tick.a", payload={"n": 1})
    writer = await bus.connect()
    # The same event stored twice (different stream entries, one event id).
    for _ in range(2):
        await writer.publish_durable(bus.subjects.event("tick.a"), envelope.encode())
    await eventually(lambda: runtime.consumers.states["tick.*"].duplicates == 1, timeout=10)
    assert counter.seen == [1]


async def test_replicas_run_sensors_and_rules_on_the_leader_only_and_hand_over(
    bus_of: Callable[[], Awaitable[Bus]],
) -> None:
    bus = await bus_of()
    actor, a, b = Actor(), Counter(), Counter()
    await bus.run(actor)
    leader = await bus.run(a)
    follower = await bus.run(b)
    assert leader.leadership.is_leader
    assert not follower.leadership.is_leader
    await bus.ticks(range(20))
    await eventually(lambda: len(actor.acted) == 20, timeout=10)
    await asyncio.sleep(0.5)
    assert (a.seen, b.seen) == (list(range(20)), [])
    assert a.polls > 0
    assert b.polls == 0
    assert follower.scheduler is not None
    assert follower.scheduler.passed > 0
    beats = {leader.instance: leader, follower.instance: follower}
    assert [r.leadership.summary()["leader"] for r in beats.values()] == [True, False]
    # A clean stop hands the lease over at once; the follower resumes the stream.
    await leader.stop()
    await bus.ticks(range(20, 30))
    await eventually(lambda: len(actor.acted) == 30, timeout=10)
    assert follower.leadership.is_leader
    assert b.seen == list(range(20, 30))
    assert sorted(actor.acted) == list(range(30))


async def test_a_crashed_leaders_event_is_acted_on_once_by_the_next(
    bus_of: Callable[[], Awaitable[Bus]],
) -> None:
    bus = await bus_of()
    bus.settings.agent = bus.settings.agent.model_copy(update={"events_ack_wait": 1.0})
    actor, a, b = SlowActor(), Counter(), Counter()
    await bus.run(actor)
    leader = await bus.run(a)
    follower = await bus.run(b)
    await bus.ticks(range(5))
    # The actor has acted on event 2 and not answered yet: the leader dies now,
    # with event 2 handled but not acknowledged.
    await asyncio.wait_for(actor.acting.wait(), 10)
    recorder = leader.recorder  # its decision about event 2 is stored before it dies
    await eventually(lambda: not recorder.backlog and not recorder.sending, timeout=10)
    await leader.transport.abort()
    await eventually(lambda: follower.leadership.is_leader, timeout=10)
    await eventually(lambda: len(b.seen) == 3, timeout=10)
    await asyncio.sleep(0.3)
    assert a.seen == [0, 1, 2]
    assert b.seen == [2, 3, 4]  # event 2 again: its handler never finished on the leader
    # ...but its call carried the same id, so the actor did not act twice,
    assert actor.acted == [0, 1, 2, 3, 4]
    # and its decision, recorded again under the same id, is in the stream once.
    await eventually(lambda: not follower.recorder.backlog, timeout=10)
    client = Client(await bus.connect(), namespace=bus.namespace, name="test")
    decisions = await client.history(kinds=["decision"])
    assert sorted(d["payload"]["trigger"]["event"] for d in decisions) == sorted(
        {d["payload"]["trigger"]["event"] for d in decisions}
    )
    assert len(decisions) == 5


class SlowActor(Actor, name="actor"):
    """Acts at once, but answers the call about event 2 only after a while."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acting = asyncio.Event()

    @actuator()
    async def act(self, n: int) -> int:
        self.acted.append(n)
        if n == 2:
            self.acting.set()
            await asyncio.sleep(1.5)
        return n


class Stuck(Agent, name="counter"):
    """A rule that waits on something that never comes (a call to a hung agent, say)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[int] = []
        self.waiting = asyncio.Event()

    @rule(on="tick.*")
    async def count(self, event: Event) -> None:
        self.seen.append(event.payload["n"])
        self.waiting.set()
        await asyncio.Event().wait()


async def test_a_stopping_agent_cancels_a_stuck_handler_and_the_next_reader_gets_its_event(
    bus_of: Callable[[], Awaitable[Bus]],
) -> None:
    bus = await bus_of()
    bus.settings.agent = bus.settings.agent.model_copy(
        update={"shutdown_timeout": 0.5, "events_ack_wait": 1.0}
    )
    stuck = Stuck()
    runtime = await bus.run(stuck)
    await bus.ticks(range(1))
    await asyncio.wait_for(stuck.waiting.wait(), 10)
    # Without a bound the stop would wait for the handler forever.
    await asyncio.wait_for(runtime.stop(), 30)
    assert runtime.state == "stopped"
    # The event was not acknowledged: the agent's next reader handles it.
    counter = Counter()
    await bus.run(counter)
    await eventually(lambda: counter.seen == [0], timeout=15)


async def test_an_agent_back_after_the_max_age_does_not_replay_what_it_missed(
    bus_of: Callable[[], Awaitable[Bus]],
) -> None:
    bus = await bus_of()
    bus.settings.agent = bus.settings.agent.model_copy(update={"events_max_age": 1.0})
    first = Counter()
    runtime = await bus.run(first)
    await bus.ticks(range(2))
    await eventually(lambda: len(first.seen) == 2, timeout=10)
    await runtime.stop()
    await bus.ticks(range(2, 5))  # missed, and older than the max age when it is back
    await asyncio.sleep(2.5)
    await bus.ticks(range(5, 7))
    second = Counter()
    await bus.run(second)
    await eventually(lambda: len(second.seen) == 2, timeout=10)
    await asyncio.sleep(0.5)
    assert second.seen == [5, 6]
