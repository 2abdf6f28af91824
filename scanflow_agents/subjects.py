"""Subject names on the wire: one place that says where every message goes.

``scanflow.<ns>.<agent>.act.<actuator>``  actuator calls (request/reply, queue group per agent)
``scanflow.<ns>.<agent>.describe``        the description of one agent (any replica answers)
``scanflow.<ns>.discover``                every replica of every agent answers (discovery)
``scanflow.<ns>.heartbeat.<agent>``       heartbeats (core NATS, not stored)
``scanflow.<ns>.events.<topic>``          events, stored in the namespace's JetStream stream
``scanflow.<ns>.<agent>.control.<op>``    control messages from operators (pause, approve, ...)
``scanflow.<ns>.chains.<corr>.<topic>``   a copy of each event under its chain, in the same
                                          stream, so one chain reads back without a scan

Built-in event topics: ``observation.<agent>.<sensor>``, ``decision.<agent>.<rule>``
and ``action.<agent>.<actuator>``. Agents emit their own topics with
:meth:`Agent.emit <scanflow_agents.Agent.emit>`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Subjects:
    """The subjects of one namespace."""

    namespace: str

    @property
    def root(self) -> str:
        return f"scanflow.{self.namespace}"

    def act(self, agent: str, actuator: str) -> str:
        return f"{self.root}.{agent}.act.{actuator}"

    def control(self, agent: str, op: str) -> str:
        return f"{self.root}.{agent}.control.{op}"

    def chain(self, correlation_id: str, topic: str = ">") -> str:
        """Where the copy of an event of one chain is stored (``>``: the whole chain)."""
        return f"{self.root}.chains.{correlation_id}.{topic}"

    @property
    def all_chains(self) -> str:
        return f"{self.root}.chains.>"

    def describe(self, agent: str) -> str:
        return f"{self.root}.{agent}.describe"

    @property
    def discover(self) -> str:
        return f"{self.root}.discover"

    def heartbeat(self, agent: str = "*") -> str:
        return f"{self.root}.heartbeat.{agent}"

    def event(self, topic: str) -> str:
        return f"{self.root}.events.{topic}"

    @property
    def events_prefix(self) -> str:
        return f"{self.root}.events."

    @property
    def all_events(self) -> str:
        return f"{self.root}.events.>"

    def topic_of(self, subject: str) -> str:
        """The event topic of an events subject."""
        return subject.removeprefix(self.events_prefix)

    def queue(self, agent: str) -> str:
        """The queue group that the replicas of one agent share."""
        return f"{self.root}.{agent}"
