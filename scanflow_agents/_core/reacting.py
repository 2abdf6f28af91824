"""Sensing and reacting: sensor runs become observations, rules turn them into decisions.

One chain shares one correlation id: the observation's id starts it, the
decision and every actuator call it makes carry it on, so the audit trail can
be read back as sensor → rule → actuator → result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scanflow_agents._core.executing import execute
from scanflow_agents._core.knowing import is_empty
from scanflow_agents._core.recording import jsonable
from scanflow_agents.errors import CallError, Rejected
from scanflow_agents.messages import Decision, Event, Observation, new_id, utcnow
from scanflow_agents.rules import RuleSpec
from scanflow_agents.sensors import SensorSpec

if TYPE_CHECKING:
    from scanflow_agents._core.running import AgentRuntime

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
    """Runs one agent's sensors and rules."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.agent = runtime.agent
        self.sensor_states = {sid: SensorState() for sid in self.agent.sensors}
        self.rule_states = {rid: RuleState() for rid in self.agent.rules}

    async def run_sensor(self, sensor_id: str, event: Event | None = None) -> Observation | None:
        """Run a sensor once; publish and react to what it observed. Never raises."""
        spec = self.agent.sensors[sensor_id]
        state = self.sensor_states[sensor_id]
        if self.runtime.refusal() is not None or self.runtime.controller.sensor_paused(sensor_id):
            state.skipped += 1
            return None
        correlation = event.correlation_id if event is not None else new_id()

        async def invoke() -> Any:
            if spec.reads is None:
                return await spec.fn(self.agent, *((event,) if event is not None else ()))
            poll = await self.runtime.knowledge.poll(spec)
            if is_empty(poll):
                return None  # nothing new: the sensor is not even called
            return await spec.fn(self.agent, poll)

        with self.runtime.chain(correlation, event.id if event is not None else None):
            outcome = await execute(
                spec, self.agent.name, invoke, self.runtime.settings.agent.handlers
            )
        state.runs += 1
        state.last_time = utcnow()
        state.last_ok = outcome.ok
        if not outcome.ok:
            state.failures += 1
            state.last_error = outcome.error_text
            return None
        state.last_error = None
        if outcome.result is None:
            if spec.reads is not None:
                await self.runtime.knowledge.commit(spec)
            return None  # nothing new to report
        value = jsonable(outcome.result)
        state.last_value = value
        observation = Observation(
            agent=self.agent.name, sensor=sensor_id, value=value, correlation_id=correlation
        )
        if spec.publish:
            await self.runtime.recorder.record(
                "observation",
                sensor_id,
                {"value": value, "trigger": str(spec.trigger)},
                correlation_id=correlation,
                causation_id=event.id if event is not None else None,
            )
        await self.react(observation, spec)
        if spec.reads is not None:
            # Only now is the poll consumed: a crash before this line shows it again.
            await self.runtime.knowledge.commit(spec)
        return observation

    async def react(self, observation: Observation, sensor: SensorSpec) -> None:
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
        with self.runtime.chain(correlation, cause):
            outcome = await execute(
                spec,
                self.agent.name,
                lambda: spec.fn(self.agent, message),
                self.runtime.settings.agent.handlers,
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
        state.last_decision = decision.model_dump(mode="json")
        logger.info(
            "%s of agent %r decided %r: %s",
            spec,
            self.agent.name,
            decision.action,
            decision.reason or "(no reason given)",
        )
        envelope = await self.runtime.recorder.record(
            "decision",
            spec.id,
            {**state.last_decision, "trigger": _trigger_of(message)},
            correlation_id=correlation,
            causation_id=cause,
        )
        with self.runtime.chain(correlation, envelope.id):
            for planned in decision.calls:
                started = time.monotonic()
                try:
                    await self.runtime.call(
                        planned.agent, planned.actuator, planned.params, timeout=planned.timeout
                    )
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
        return decision


def _trigger_of(message: Observation | Event) -> dict[str, Any]:
    if isinstance(message, Observation):
        return {"observation": message.id, "sensor": message.sensor}
    return {"event": message.id, "topic": message.topic, "source": message.source}
