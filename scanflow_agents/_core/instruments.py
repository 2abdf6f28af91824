"""Instruments: what the runtime reports about its work, to whoever measures it.

The core calls these hooks at a few points (a sensor ran, a rule decided, an
actuator call was answered, a guarded loop died); it does not know what
listens. The pod entrypoint plugs in Prometheus metrics; everything else gets
:data:`NO_INSTRUMENTS`, which does nothing. Hooks are plain synchronous calls
on the event loop, so an implementation must be cheap and must not raise.

Labels passed here are agent, handler and outcome names: a bounded set, never
a message or correlation id, so a metrics back end can use them as labels.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from scanflow_agents._core.executing import Outcome
from scanflow_agents.messages import Reply

Respond = Callable[[Reply], Awaitable[None]]


class Instruments(Protocol):
    """The hooks an agent runtime calls. Every method must be cheap and never raise."""

    def sensor_ran(self, agent: str, sensor: str, outcome: Outcome) -> None:
        """A sensor run ended: ``outcome.ok`` false if it failed after its retries.

        ``outcome.duration`` is how long it took, retries included.
        """

    def rule_decided(self, agent: str, rule: str) -> None:
        """A rule returned a decision (which the runtime then records and carries out)."""

    def call_answered(self, agent: str, actuator: str, respond: Respond) -> Respond:
        """A call to ``actuator`` arrived: wrap the function that sends its reply.

        The runtime calls this once when a call arrives and sends the reply
        through what it returns, so an implementation sees the call start (in
        flight), its outcome (the reply's error code, or ``ok``) and its latency
        without the dispatcher keeping any of that for it.
        """
        ...

    def loop_broken(self, agent: str, task: str) -> None:
        """A guarded endless loop of the agent (heartbeat, recorder) ended: it is not alive."""


class _NoInstruments:
    """Instruments that measure nothing (the default outside a pod)."""

    def sensor_ran(self, agent: str, sensor: str, outcome: Outcome) -> None:
        pass

    def rule_decided(self, agent: str, rule: str) -> None:
        pass

    def call_answered(self, agent: str, actuator: str, respond: Respond) -> Respond:
        return respond

    def loop_broken(self, agent: str, task: str) -> None:
        pass


NO_INSTRUMENTS: Instruments = _NoInstruments()
