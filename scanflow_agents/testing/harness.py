"""A harness to run agents in tests: in memory by default, on a real NATS with one switch."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from scanflow_agents._core.recording import event_record
from scanflow_agents._core.running import AgentRuntime
from scanflow_agents.agents import Agent
from scanflow_agents.clients import Client, connect_transport
from scanflow_agents.messages import Envelope, Observation
from scanflow_agents.settings import Settings
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Message, Transport
from scanflow_agents.transports.memory import MemoryBroker, MemoryTransport
from scanflow_agents.transports.nats import NatsTransport

logger = logging.getLogger("scanflow_agents.testing")


class AgentHarness:
    """Runs agents, records every event they publish, and drives them by hand.

    Each agent gets its own connection, as if it ran in its own process. A
    fresh namespace per harness keeps tests apart on a shared NATS server::

        async with AgentHarness(Checker(), Planner(), nats_url=nats_url) as h:
            await h.run_sensor("checker", "drift")
            h.assert_called("planner", "scale", replicas=3)

    Args:
        *agents: the agents to run.
        nats_url: a real NATS server to use; ``None`` runs on an in-memory bus.
        namespace: defaults to a fresh random one, whose JetStream stream and
            key-value buckets the harness deletes when it exits (a namespace you
            name is left as it is).
        schedule: start time-triggered sensors (off by default: drive them with
            :meth:`run_sensor` instead of waiting).
        settings: base settings for the agents (namespace and NATS URL are set here).
    """

    def __init__(
        self,
        *agents: Agent,
        nats_url: str | None = None,
        namespace: str | None = None,
        schedule: bool = False,
        settings: Settings | None = None,
    ) -> None:
        base = settings or Settings.defaults()
        self.namespace = namespace or f"test-{uuid.uuid4().hex[:8]}"
        self._own_namespace = namespace is None
        nats = base.nats.model_copy(update={"url": nats_url} if nats_url else {})
        self.settings = base.model_copy(update={"namespace": self.namespace, "nats": nats})
        self.nats_url = nats_url
        self.agents = {agent.name: agent for agent in agents}
        self.schedule = schedule
        self.events: list[dict[str, Any]] = []
        self.broker = MemoryBroker()
        self.subjects = Subjects(self.namespace)
        self._stack = AsyncExitStack()
        self._changed = asyncio.Event()
        self.client: Client

    async def connect(self, name: str) -> Transport:
        """A new connection to the harness's bus (memory or NATS)."""
        if self.nats_url is None:
            transport: Transport = MemoryTransport(self.broker)
        else:
            transport = await connect_transport(self.settings, name=name)
        self._stack.push_async_callback(transport.close)
        return transport

    async def __aenter__(self) -> AgentHarness:
        try:
            client_transport = await self.connect("harness")
            if self._own_namespace and isinstance(client_transport, NatsTransport):
                # Runs after every agent stopped and before this connection closes.
                self._stack.push_async_callback(self._delete_streams, client_transport)
            self.client = Client(client_transport, namespace=self.namespace, name="harness")
            for events in (self.subjects.all_events, self.subjects.all_telemetry):
                await client_transport.subscribe(events, self._on_event)
            for agent in self.agents.values():
                agent.settings = self.settings
                runtime = agent.running(await self.connect(agent.name), schedule=self.schedule)
                await self._stack.enter_async_context(runtime)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _delete_streams(self, transport: NatsTransport) -> None:
        """Delete the namespace's event streams and key-value buckets from the shared server."""
        try:
            names = [info.config.name for info in await transport.js.streams_info()]
            ours = {spec.name for spec in transport.streams}
            # Bucket names spell the namespace with '_' for '-' (see Subjects), or as it is.
            spellings = (self.namespace, self.namespace.replace("-", "_"))
            for name in names:
                if name in ours or (
                    name is not None
                    and name.startswith("KV_")
                    and any(spelling in name for spelling in spellings)
                ):
                    await transport.js.delete_stream(name)
        except Exception as exc:  # cleaning up must not hide the test's own outcome
            logger.warning("harness could not delete the streams of %r: %s", self.namespace, exc)

    async def _on_event(self, message: Message) -> None:
        topic = self.subjects.topic_of(message.subject)
        envelope = Envelope.decode(message.data)
        record = event_record(envelope, topic.split(".", 1)[0], envelope.target or "")
        record["topic"] = topic
        self.events.append(record)
        self._changed.set()

    def runtime(self, agent: str) -> AgentRuntime:
        return self.agents[agent].runtime

    async def run_sensor(self, agent: str, sensor: str) -> Observation | None:
        """Run a sensor now, with its rules and their calls, and return the observation."""
        return await self.runtime(agent).run_sensor(sensor)

    async def call(
        self,
        agent: str,
        actuator: str,
        arguments: Mapping[str, Any] | None = None,
        /,
        **kwargs: Any,
    ) -> Any:
        """Call an actuator as an outside client would (over the bus); see ``Client.call``."""
        return await self.client.call(agent, actuator, arguments, **kwargs)

    async def emit(self, topic: str, payload: Any, *, source: str = "harness") -> Envelope:
        """Publish an event as some outside source would."""
        envelope = Envelope(kind="event", source=source, target=topic, payload=payload)
        await self.client.transport.publish_durable(self.subjects.event(topic), envelope.encode())
        return envelope

    def records(
        self, kind: str, agent: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Recorded events of one kind (observation, decision, action), optionally filtered."""
        return [
            e
            for e in self.events
            if e["kind"] == kind
            and (agent is None or e["agent"] == agent)
            and (name is None or e["name"] == name)
        ]

    def calls(self, agent: str | None = None, actuator: str | None = None) -> list[dict[str, Any]]:
        """The actuator calls the agents recorded (executed, refused or dry-run)."""
        return [e["payload"] for e in self.records("action", agent, actuator)]

    def assert_called(self, agent: str, actuator: str, /, **params: Any) -> dict[str, Any]:
        """Assert that ``agent.actuator`` was executed successfully with at least these params."""
        for call in self.calls(agent, actuator):
            if call["ok"] and all(call["params"].get(k) == v for k, v in params.items()):
                return call
        seen = [c["params"] for c in self.calls(agent, actuator)]
        raise AssertionError(f"{agent}.{actuator} was not called with {params}; calls seen: {seen}")

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 5.0
    ) -> None:
        """Wait until ``predicate(self.events)`` holds (events arrive asynchronously)."""
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until the agents' work in flight is done and its records are stored.

        Calls, control messages and sensor runs under way finish, and the
        records they made reach the stream (each wait bounded by ``timeout``);
        then the harness's own connection is flushed, so what the agents
        published has arrived in :attr:`events`.
        """
        for agent in self.agents.values():
            await agent.runtime.settle(timeout)
        await self.client.transport.flush()
        await asyncio.sleep(0.01)


async def eventually(
    condition: Callable[[], bool], *, timeout: float = 5.0, what: str | None = None
) -> float:
    """Wait until ``condition()`` holds, checking every few milliseconds.

    For state that changes without an event to wait on (a counter in an
    agent, a process count). The one wait loop of the tests: it runs on the
    loop's clock, so a test on a fake clock waits no real time.

    Args:
        condition: Checked at once, then every 5 ms.
        timeout: Seconds before giving up.
        what: Says what was waited for in the error (default: the condition's name).

    Returns:
        The seconds it took.

    Raises:
        TimeoutError: naming what was waited for and for how long.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > timeout:
            name = what or getattr(condition, "__qualname__", repr(condition))
            raise TimeoutError(f"{name}: still not true after {timeout:g} s")
        await asyncio.sleep(0.005)
    return loop.time() - started
