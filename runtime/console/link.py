"""The console's connection to NATS and what it hears: heartbeats and events.

No Textual here: a :class:`Link` connects (and keeps trying while NATS is
unreachable), keeps the latest heartbeat of every agent replica and a
bounded tail of events, and calls ``on_change`` when either changes. The
console's workers drive it; tests can too.

Heartbeats are read into :class:`~scanflow_agents.messages.Heartbeat` as they
arrive. One that cannot be read (malformed, or of another major version) is
kept as a one-line problem under its agent's name (until the agent has been
silent as long as a forgotten replica), and an agent heard only that way is
listed as ``unreadable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents.runtime.feeds import record_of

from scanflow_agents import Settings
from scanflow_agents.clients import Client, connect_transport
from scanflow_agents.controls import Controls
from scanflow_agents.errors import BadMessage
from scanflow_agents.messages import Envelope, Heartbeat, utcnow
from scanflow_agents.transports.base import Message, TransportError

logger = logging.getLogger("scanflow_agents.console")

TAIL = 1000  # events kept for the events pane


@dataclass
class Replica:
    """The latest word from one agent replica."""

    heartbeat: Heartbeat
    heard: float = field(default_factory=time.monotonic)


@dataclass
class Unreadable:
    """The latest answer of an agent that could not be read, as one line."""

    problem: str
    heard: float = field(default_factory=time.monotonic)


@dataclass
class AgentRow:
    """One line of the agents pane: an agent and its replicas."""

    name: str
    replicas: int
    state: str
    last_heard: float
    uptime: float
    approvals: int
    stale: bool


class Link:
    """One console's view of a namespace: connection, agents, events.

    Args:
        settings: where NATS is and which namespace to watch.
        name: the caller name recorded in the audit trail for control ops.
        stale_after: seconds without a heartbeat after which a replica is stale.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str = "console",
        stale_after: float | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.stale_after = stale_after or 3 * settings.agent.heartbeat_interval + 1
        self.on_change = on_change or (lambda what: None)
        self.client: Client | None = None
        self.replicas: dict[tuple[str, str], Replica] = {}
        self.unreadable: dict[str, Unreadable] = {}  # by agent
        self.events: deque[dict[str, Any]] = deque(maxlen=TAIL)
        self.error: str | None = None
        self.down_since: float | None = None
        self._closed = False

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def url(self) -> str:
        return self.settings.nats.url

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.transport.connected

    @property
    def controls(self) -> Controls:
        # The replicas heard from: control ops return once all of them answered.
        known = {row.name: row.replicas for row in self.agents() if row.replicas}
        return Controls(self.require(), replicas=known)

    def require(self) -> Client:
        """The client, or a clear error while NATS is unreachable."""
        if self.client is None or not self.connected:
            raise TransportError(f"NATS at {self.url} is unreachable; reconnecting")
        return self.client

    async def connect(self, retry_every: float = 1.0) -> None:
        """Connect, retrying until it works or :meth:`close` is called."""
        while not self._closed:
            try:
                transport = await connect_transport(self.settings, name=self.name)
            except TransportError as exc:
                self._down(str(exc))
                await asyncio.sleep(retry_every)
                continue
            self.client = Client(transport, namespace=self.namespace, name=self.name)
            subjects = self.client.subjects
            await transport.subscribe(subjects.heartbeat("*"), self._on_heartbeat)
            await transport.subscribe(subjects.all_events, self._on_event)
            self.error, self.down_since = None, None
            self.on_change("connection")
            return

    def _down(self, error: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        if error != self.error:
            self.error = error
            self.on_change("connection")

    def check(self) -> None:
        """Notice a lost or restored connection (the client reconnects by itself)."""
        if self.client is None:
            return
        if self.connected:
            if self.error is not None:
                self.error, self.down_since = None, None
                self.on_change("connection")
        else:
            self._down(f"lost the connection to NATS at {self.url}")

    async def refresh(self, wait: float = 0.3) -> None:
        """Ask every replica for its heartbeat now (discovery), and read the kept last states."""
        client = self.require()
        for heartbeat in await client.discover(wait=wait, unreadable=self._unreadable):
            self._heard(heartbeat)
        # Replicas gone before this console started (or while it was away) are
        # known only by the last state they kept: `stopped`, or silent (stale).
        now, moment = time.monotonic(), utcnow()
        for kept in await client.last_states(unreadable=self._unreadable):
            key = (kept.agent, kept.instance)
            if key not in self.replicas:
                age = max(0.0, (moment - kept.time).total_seconds())
                self.replicas[key] = Replica(kept, heard=now - age)
        self.on_change("agents")

    async def backfill(self, limit: int = 200) -> None:
        """Load the latest stored events into the tail."""
        client = self.require()
        stored = await client.history(kinds=None, limit=limit, newest=True)
        known = {record["id"] for record in self.events}
        merged = [r for r in stored if r["id"] not in known] + list(self.events)
        merged.sort(key=lambda record: record["time"])
        self.events.clear()
        self.events.extend(merged)
        self.on_change("events")

    async def _on_heartbeat(self, message: Message) -> None:
        try:
            envelope = Envelope.decode(message.data)
        except ValueError:
            return  # not an envelope: there is no agent to name
        try:
            heartbeat = Heartbeat.read(envelope.payload, agent=envelope.source)
        except BadMessage as exc:
            self._unreadable(exc)
            return
        self._heard(heartbeat)
        self.on_change("agents")

    def _heard(self, heartbeat: Heartbeat) -> None:
        key = (heartbeat.agent, heartbeat.instance)
        known = self.replicas.get(key)
        # An instance that said `stopped` never runs again (a restarted agent has a
        # new instance): a discovery answer sent before its stop but read after its
        # last heartbeat must not bring it back (seen on a busy machine: `stale`).
        if known is not None and known.heartbeat.state == "stopped":
            return
        self.replicas[key] = Replica(heartbeat)

    def _unreadable(self, error: BadMessage) -> None:
        # Told once per new problem: the same one again every heartbeat is not news.
        agent = error.agent or "?"
        known = self.unreadable.get(agent)
        self.unreadable[agent] = Unreadable(error.message)
        if known is None or known.problem != error.message:
            self.on_change("unreadable")

    def latest_problem(self) -> str | None:
        """The newest unreadable answer, in one line (``None`` if every agent reads fine)."""
        if not self.unreadable:
            return None
        return max(self.unreadable.values(), key=lambda u: u.heard).problem

    async def _on_event(self, message: Message) -> None:
        assert self.client is not None
        record = record_of(self.client.subjects, message.subject, message.data)
        if record is not None:
            self.events.append(record)
            self.on_change("events")

    def agents(self) -> list[AgentRow]:
        """The agents pane: replicas heard recently, stale ones marked, by name."""
        now = time.monotonic()
        by_agent: dict[str, list[Replica]] = {}
        for (agent, _), replica in self.replicas.items():
            by_agent.setdefault(agent, []).append(replica)
        rows = [
            # Known only by what could not be read: listed, so it is not taken for absent.
            AgentRow(agent, 0, "unreadable", now - unread.heard, 0.0, 0, stale=False)
            for agent, unread in self.unreadable.items()
            if agent not in by_agent
        ]
        for agent, replicas in by_agent.items():
            # A replica whose last heartbeat said `stopped` left on purpose: it
            # neither counts as running nor makes the agent look dead.
            fresh = [
                r
                for r in replicas
                if now - r.heard <= self.stale_after and r.heartbeat.state != "stopped"
            ]
            latest = max(fresh or replicas, key=lambda r: r.heard)
            beat = latest.heartbeat
            stopped = not fresh and all(r.heartbeat.state == "stopped" for r in replicas)
            rows.append(
                AgentRow(
                    name=agent,
                    replicas=len(fresh),
                    state=state_of(beat) if fresh else "stopped" if stopped else "stale",
                    last_heard=now - latest.heard,
                    uptime=beat.uptime + (now - latest.heard),
                    approvals=sum(r.heartbeat.approvals for r in fresh),
                    stale=not fresh and not stopped,
                )
            )
        return sorted(rows, key=lambda row: row.name)

    def forget_stale(self, older_than: float = 600.0) -> None:
        """Drop replicas silent for long (a restarted agent has a new instance)."""
        now = time.monotonic()
        for key in [k for k, r in self.replicas.items() if now - r.heard > older_than]:
            del self.replicas[key]
        for agent in [a for a, u in self.unreadable.items() if now - u.heard > older_than]:
            del self.unreadable[agent]

    async def close(self) -> None:
        self._closed = True
        if self.client is not None:
            await self.client.transport.close()


def state_of(heartbeat: Heartbeat) -> str:
    """running, paused, dry-run, not ready...: what one word can say about a replica."""
    state = heartbeat.state
    if state == "running" and not heartbeat.ready:
        state = "not ready"
    if heartbeat.dry_run:
        state += " dry-run"
    if heartbeat.frozen:
        state += " frozen"  # the namespace's actuators refuse to act
    if heartbeat.unstored:
        state += " unrecorded"  # its records cannot be stored now
    if heartbeat.leader:
        state += " leader"
    if heartbeat.paused_sensors:
        state += " ~paused"
    return state
