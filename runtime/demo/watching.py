"""What the demo sees happen on the wire: events as they come, and heartbeats.

The log subscribes to every event of the namespace (``scanflow.demo.events.>``)
and to heartbeats, as any outside client could. The live view reads it, and
the scenario waits on it ("until a new version serves"); the summary is
computed afterwards from the durable audit trail, not from this log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from scanflow_agents.clients import Client
from scanflow_agents.errors import BadMessage
from scanflow_agents.messages import Envelope, Heartbeat
from scanflow_agents.transports import Message, Subscription


@dataclass(frozen=True)
class Seen:
    """One event as the demo received it."""

    time: float  # epoch seconds, the event's own time
    topic: str
    source: str
    payload: Any


def epoch(value: str | datetime) -> float:
    """Epoch seconds of an ISO time (as records carry it) or a datetime."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.timestamp()


def replicas_of(payload: dict[str, Any]) -> tuple[int, int] | None:
    """``(before, after)`` of a successful planner ``scale`` action payload, else None."""
    if not payload.get("ok"):
        return None
    details = (payload.get("result") or {}).get("details") or {}
    if "replicas" not in details:
        return None
    return int(details.get("before", details["replicas"])), int(details["replicas"])


class EventLog:
    """Events and heartbeats of one namespace, kept in memory while the demo runs."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Seen] = []
        self.heartbeats: dict[str, tuple[float, Heartbeat]] = {}
        self._subscriptions: list[Subscription] = []

    async def __aenter__(self) -> EventLog:
        subjects = self.client.subjects
        transport = self.client.transport
        self._subscriptions = [
            await transport.subscribe(subjects.all_events, self._on_event),
            await transport.subscribe(subjects.heartbeat(), self._on_heartbeat),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.unsubscribe()

    async def _on_event(self, message: Message) -> None:
        try:
            envelope = Envelope.decode(message.data)
        except (ValidationError, ValueError):
            return  # not ours to judge; the view shows what it understands
        topic = self.client.subjects.topic_of(message.subject)
        self.events.append(Seen(epoch(envelope.time), topic, envelope.source, envelope.payload))

    async def _on_heartbeat(self, message: Message) -> None:
        try:
            envelope = Envelope.decode(message.data)
            beat = Heartbeat.read(envelope.payload, agent=envelope.source)
        except (ValidationError, ValueError, BadMessage):
            return  # the demo's own agents keep the contract; anything else is not shown
        self.heartbeats[beat.agent] = (time.time(), beat)

    # -- what the scenario waits for -----------------------------------------------------

    def recovered(self, since: float) -> bool:
        """Whether the loop ended its reaction to the drift after ``since``: the planner
        redeployed the service, or the improver rejected the candidate."""
        return any(
            e.time >= since
            and (
                (e.topic == "action.planner.redeploy" and e.payload.get("ok"))
                or (
                    e.topic.startswith("decision.improver.")
                    and e.payload.get("action") == "reject-candidate"
                )
            )
            for e in self.events
        )

    def scaled(self, since: float, *, out: bool = True) -> bool:
        """Whether the planner scaled out (or in) after ``since``."""
        for e in self.events:
            if e.topic == "action.planner.scale" and e.time >= since:
                change = replicas_of(e.payload)
                if change is not None and (change[1] > change[0]) == out and change[1] != change[0]:
                    return True
        return False

    def happened(self, condition: str, since: float) -> bool:
        """``recovered``, ``scaled`` or ``scaled-in`` (a phase's ``until``) after ``since``."""
        if condition == "recovered":
            return self.recovered(since)
        if condition == "scaled":
            return self.scaled(since)
        if condition == "scaled-in":
            return self.scaled(since, out=False)
        raise ValueError(f"the demo cannot wait for {condition!r}")
