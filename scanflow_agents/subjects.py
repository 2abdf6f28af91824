"""Subject names on the wire: one place that says where every message goes.

``scanflow.<ns>.<agent>.act.<actuator>``  actuator calls (request/reply, queue group per agent)
``scanflow.<ns>.<agent>.describe``        the description of one agent (any replica answers)
``scanflow.<ns>.discover``                every replica of every agent answers (discovery)
``scanflow.<ns>.heartbeat.<agent>``       heartbeats (core NATS, not stored)
``scanflow.<ns>.events.<topic>``          events, stored in the namespace's audit stream
``scanflow.<ns>.telemetry.<topic>``       telemetry (topics ``telemetry.<...>``: what model
                                          servers report), in the namespace's telemetry
                                          stream: short retention, oldest dropped when full
``scanflow.<ns>.<agent>.control.<op>``    control messages from operators (pause, approve, ...)
``scanflow.<ns>.control.<op>``            control messages to every agent of the namespace (freeze)
``scanflow.<ns>.chains.<corr>.<topic>``   a copy of each event under its chain, in the same
                                          stream, so one chain reads back without a scan

Built-in event topics: ``observation.<agent>.<sensor>``, ``decision.<agent>.<rule>``
and ``action.<agent>.<actuator>``. Agents emit their own topics with
:meth:`Agent.emit <scanflow_agents.Agent.emit>`. A topic that starts with
``telemetry.`` (``telemetry.serving.<workflow>.<node>``: model-server reports)
is telemetry, not audit: it goes to the telemetry stream, where a fleet of
reporters can fill the size limit without stopping the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass

TELEMETRY = "telemetry"
"""The first token of every telemetry topic."""


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

    def namespace_control(self, op: str) -> str:
        """A control message to every agent of the namespace (``freeze``)."""
        return f"{self.root}.control.{op}"

    @property
    def switches_bucket(self) -> str:
        """The key-value bucket of the namespace's switches (the freeze), read at start."""
        return self._bucket("switches")

    def describe(self, agent: str) -> str:
        return f"{self.root}.{agent}.describe"

    @property
    def discover(self) -> str:
        return f"{self.root}.discover"

    def heartbeat(self, agent: str = "*") -> str:
        return f"{self.root}.heartbeat.{agent}"

    def event(self, topic: str) -> str:
        """The subject of an event topic (a telemetry topic's is under ``telemetry``)."""
        if topic.split(".", 1)[0] == TELEMETRY:
            return f"{self.root}.{topic}"
        return f"{self.root}.events.{topic}"

    @property
    def events_prefix(self) -> str:
        return f"{self.root}.events."

    @property
    def all_events(self) -> str:
        """Every audit event (telemetry not included: :attr:`all_telemetry`)."""
        return f"{self.root}.events.>"

    @property
    def all_telemetry(self) -> str:
        return f"{self.root}.{TELEMETRY}.>"

    def topic_of(self, subject: str) -> str:
        """The event topic of an events or telemetry subject."""
        if subject.startswith(self.events_prefix):
            return subject.removeprefix(self.events_prefix)
        return subject.removeprefix(f"{self.root}.")

    @property
    def calls_bucket(self) -> str:
        """The key-value bucket of keyed calls (``started``/``done``), shared by replicas."""
        return self._bucket("calls")

    @property
    def agents_bucket(self) -> str:
        """The key-value bucket of each replica's last heartbeat (``<agent>.<instance>``)."""
        return self._bucket("agents")

    @property
    def approvals_bucket(self) -> str:
        """The key-value bucket of the approvals waiting for a person (``<agent>.<id>``)."""
        return self._bucket("approvals")

    def _bucket(self, purpose: str) -> str:
        # Bucket names take no '-' in some NATS tools; namespaces may have one.
        return f"scanflow_{self.namespace.replace('-', '_')}_{purpose}"

    @property
    def budget_bucket(self) -> str:
        """The key-value bucket of the namespace's action budget (a count per window)."""
        return self._bucket("budget")

    def queue(self, agent: str) -> str:
        """The queue group that the replicas of one agent share."""
        return f"{self.root}.{agent}"
