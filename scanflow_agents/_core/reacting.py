"""Sensing and reacting: sensor runs become observations, rules turn them into decisions.

One chain shares one correlation id: the observation's id starts it, the
decision and every actuator call it makes carry it on, so the audit trail can
be read back as sensor → rule → actuator → result.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scanflow_agents import chains, redaction
from scanflow_agents._core.executing import execute
from scanflow_agents._core.instruments import NO_INSTRUMENTS, Instruments
from scanflow_agents._core.knowing import is_empty
from scanflow_agents._core.ports import (
    AgentSpec,
    Call,
    Cursors,
    Record,
    SensorRefusal,
    never_refuse,
)
from scanflow_agents._core.recording import jsonable
from scanflow_agents.errors import CallError, CallTimeout, Rejected
from scanflow_agents.messages import Call as PlannedCall
from scanflow_agents.messages import Decision, Event, Observation, new_id, utcnow
from scanflow_agents.rules import RuleSpec
from scanflow_agents.sensors import SensorSpec
from scanflow_agents.settings import HandlerSettings

logger = logging.getLogger("scanflow_agents.reacting")


@dataclass
class SensorState:
    """What the description shows of a sensor: its last run and counters."""

    runs: int = 0
    failures: int = 0
    last_time: datetime | None = None
    last_ok: bool | None = None
    last_value: Any = None
    last_error: str | None = None
    skipped: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "failures": self.failures,
            "skipped": self.skipped,
            "last": None
            if self.last_time is None
            else {
                "time": self.last_time.isoformat(),
                "ok": self.last_ok,
                "value": self.last_value,
                "error": self.last_error,
            },
        }


@dataclass
class RuleState:
    runs: int = 0
    decisions: int = 0
    failures: int = 0
    last_decision: dict[str, Any] | None = field(default=None)


class Reactor:
    """Runs one agent's sensors and rules, and makes the calls its decisions ask for.

    Args:
        agent: the agent whose handlers run (passed to them as ``self``).
        handlers: the default timeout, retries and backoff of handlers.
        record: keeps observations and decisions (the runtime's recorder).
        call: makes a decision's calls (the runtime's call path).
        refusal: why a sensor (by id) does not run now, or ``None``: the agent
            or the sensor is paused (read from the agent's ``ControlState``).
        cursors: positions of sensors that read MLflow; needed only if one does.
        instruments: told of every sensor run and decision (the pod's metrics).
        shadow: the agent is a shadow (``settings.agent.shadow``): its decision
            records say ``"shadow": true`` (its calls are dry runs: see the
            runtime's call path).
    """

    def __init__(
        self,
        agent: AgentSpec,
        *,
        handlers: HandlerSettings,
        record: Record,
        call: Call,
        refusal: SensorRefusal = never_refuse,
        cursors: Cursors | None = None,
        instruments: Instruments = NO_INSTRUMENTS,
        shadow: bool = False,
    ) -> None:
        self.agent = agent
        self.shadow = shadow
        self.handlers = handlers
        self.instruments = instruments
        self.record = record
        self.call = call
        self.refusal = refusal
        self.cursors = cursors
        self.sensor_states = {sid: SensorState() for sid in agent.sensors}
        self.rule_states = {rid: RuleState() for rid in agent.rules}

    def _cursors(self, spec: SensorSpec) -> Cursors:
        if self.cursors is None:
            raise RuntimeError(f"{spec} of agent '{self.agent.name}' reads MLflow: no cursors")
        return self.cursors

    async def run_sensor(self, sensor_id: str, event: Event | None = None) -> Observation | None:
        """Run a sensor once; publish and react to what it observed. Never raises."""
        spec = self.agent.sensors[sensor_id]
        state = self.sensor_states[sensor_id]
        # Checked as the run starts, not when it was scheduled: a pause takes effect
        # from the next run, and a run already under way finishes.
        if self.refusal(sensor_id) is not None:
            state.skipped += 1
            return None
        # A timed run starts a new story; an event sensor continues the event's.
        correlation = event.correlation_id if event is not None else new_id()

        async def invoke() -> Any:
            if spec.reads is None:
                return await spec.fn(self.agent, *((event,) if event is not None else ()))
            poll = await self._cursors(spec).poll(spec)
            if is_empty(poll):
                return None  # nothing new: the sensor is not even called
            return await spec.fn(self.agent, poll)

        # In the chain, so calls and events the sensor makes itself join its story.
        with chains.within(correlation, event.id if event is not None else None):
            outcome = await execute(spec, self.agent.name, invoke, self.handlers)
        state.runs += 1
        self.instruments.sensor_ran(self.agent.name, sensor_id, outcome)
        state.last_time = utcnow()
        state.last_ok = outcome.ok
        # A failed run commits no cursor: the next run reads the same rows again.
        if not outcome.ok:
            state.failures += 1
            state.last_error = outcome.error_text
            return None
        state.last_error = None
        if outcome.result is None:
            # The sensor saw the rows and found nothing to report: they are consumed all
            # the same, or every later run would read them again.
            if spec.reads is not None:
                await self._cursors(spec).commit(spec)
            return None  # nothing new to report
        value = jsonable(outcome.result)
        state.last_value = value
        cause = event.id if event is not None else None
        # The observation rules receive carries the id of its recorded event, so
        # a decision's causation id names an event that exists in the stream.
        observation_id = new_id()
        if spec.publish:
            recorded = await self.record(
                "observation",
                sensor_id,
                {"value": value, "trigger": str(spec.trigger)},
                correlation_id=correlation,
                causation_id=cause,
            )
            observation_id = recorded.id
        observation = Observation(
            id=observation_id,
            agent=self.agent.name,
            sensor=sensor_id,
            value=value,
            correlation_id=correlation,
        )
        await self.react(observation, spec)
        if spec.reads is not None:
            # Only now is the poll consumed: a crash before this line shows it again.
            await self._cursors(spec).commit(spec)
        return observation

    async def react(self, observation: Observation, sensor: SensorSpec) -> None:
        """Run the rules watching ``sensor`` on its observation, one after another.

        In declaration order and awaited, so a rule's calls are made before the
        next rule runs and before the sensor's next run (it does not overlap itself).
        """
        for rule_spec in self.agent.rules.values():
            if rule_spec.watches_sensor(sensor.id):
                await self.run_rule(
                    rule_spec, observation, observation.correlation_id, observation.id
                )

    async def run_rule(
        self, spec: RuleSpec, message: Observation | Event, correlation: str, cause: str | None
    ) -> Decision | None:
        """Run a rule on an observation or event; record and carry out its decision."""
        state = self.rule_states[spec.id]
        with chains.within(correlation, cause):
            outcome = await execute(
                spec, self.agent.name, lambda: spec.fn(self.agent, message), self.handlers
            )
        state.runs += 1
        if not outcome.ok:
            state.failures += 1
            return None
        if outcome.result is None:
            return None
        decision = outcome.result
        if not isinstance(decision, Decision):
            logger.error(
                "%s of agent %r returned %s; a rule returns a Decision or None (ignored)",
                spec,
                self.agent.name,
                type(decision).__name__,
            )
            state.failures += 1
            return None
        state.decisions += 1
        self.instruments.rule_decided(self.agent.name, spec.id)
        state.last_decision = decision.model_dump(mode="json")
        logger.info(
            "%s of agent %r decided %r: %s",
            spec,
            self.agent.name,
            decision.action,
            decision.reason or "(no reason given)",
        )
        # Recorded before any call: the decision stands even if its calls fail,
        # and the calls carry its id as their cause. Its id comes from the rule
        # and the message, like its calls' ids: a message handled again (see
        # planned_id) records the same decision once.
        shadow = {"shadow": True} if self.shadow else {}
        envelope = await self.record(
            "decision",
            spec.id,
            {**state.last_decision, "trigger": _trigger_of(message), **shadow},
            correlation_id=correlation,
            causation_id=cause,
            event_id=planned_id(self.agent.name, spec.id, cause, "decision"),
        )
        # One after another, in the order the rule listed them: a later call may
        # depend on an earlier one (promote, then redeploy). A failed call is
        # logged and recorded, and the next one is still made; the rule chose
        # them all.
        with chains.within(correlation, envelope.id):
            for index, planned in enumerate(decision.calls):
                started = time.monotonic()
                call_id = planned_id(self.agent.name, spec.id, cause, str(index))
                try:
                    await self._carry_out(planned, call_id)
                except CallError as exc:
                    # A guard saying no (cooldown, rate) is the system working, not an error.
                    level = logging.INFO if isinstance(exc, Rejected) else logging.ERROR
                    logger.log(
                        level,
                        "decision '%s' of %s (agent %r): call to %s.%s failed after %.3g s: %s",
                        decision.action,
                        spec,
                        self.agent.name,
                        planned.agent or self.agent.name,
                        planned.actuator,
                        time.monotonic() - started,
                        exc,
                    )
                    if not isinstance(exc, Rejected):  # the callee recorded its refusal
                        await self._record_failure(
                            spec.id, planned, call_id, exc, correlation, envelope.id, cause, index
                        )
        return decision

    async def _record_failure(
        self,
        rule: str,
        planned: PlannedCall,
        call_id: str | None,
        error: CallError,
        correlation: str,
        decision_id: str,
        cause: str | None,
        index: int,
    ) -> None:
        """Keep a decision's failed call in its chain, as the caller saw it.

        A call that got no answer, found no agent or was refused as malformed
        may have left no record at the callee: without this one, the chain
        would show the decision and then nothing.
        """
        await self.record(
            "failed",
            rule,
            {
                "agent": planned.agent or self.agent.name,
                "actuator": planned.actuator,
                "params": redaction.mask(planned.params),
                "call_id": call_id,
                "error": {"code": error.code.value, "message": error.message},
            },
            correlation_id=correlation,
            causation_id=decision_id,
            event_id=planned_id(self.agent.name, rule, cause, f"{index}.failed"),
        )

    async def _carry_out(self, planned: PlannedCall, call_id: str | None) -> None:
        """Make one planned call; a keyed one that got no answer is asked once more.

        No answer does not say whether the callee acted: the request may have
        been lost (a NATS server or a stream leader changing under it) or the
        reply. With the same id, asking again is safe: the callee's guard answers
        a call it ran from its store, a duplicate of one still running waits for
        it, and one claimed by a replica that died is ``in_doubt``; it never runs
        twice. A call without an id is not asked again.
        """
        for attempt in (1, 2):
            try:
                await self.call(
                    planned.agent,
                    planned.actuator,
                    planned.params,
                    timeout=planned.timeout,
                    call_id=call_id,
                )
                return
            except CallTimeout as exc:
                if call_id is None or attempt == 2:
                    raise
                logger.warning(
                    "agent %r: %s; asking once more with the same call id", self.agent.name, exc
                )


def planned_id(agent: str, rule: str, cause: str | None, part: str) -> str | None:
    """The id of a decision (``part="decision"``) or of its call number ``part``.

    The same each time the rule handles the same message: an event handled
    again (its replica died before acknowledging it, and the next leader got
    it) records its decision under the same id, which the stream keeps once,
    and makes the same calls with the same ids, which the receiver's
    idempotency guard answers without acting twice.
    """
    if cause is None:
        return None
    # NUL between the parts: no two different tuples join into the same text.
    return hashlib.sha256(f"{agent}\0{rule}\0{cause}\0{part}".encode()).hexdigest()[:32]


def _trigger_of(message: Observation | Event) -> dict[str, Any]:
    # Its time too: two agents deciding on the same cause (a shadow and the
    # live agent) are compared in the order their causes happened.
    if isinstance(message, Observation):
        return {
            "observation": message.id,
            "sensor": message.sensor,
            "time": message.time.isoformat(),
        }
    return {
        "event": message.id,
        "topic": message.topic,
        "source": message.source,
        "time": message.time.isoformat(),
    }
