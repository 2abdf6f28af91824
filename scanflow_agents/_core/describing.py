"""What an agent says about itself: its description and its heartbeats."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from scanflow_agents.messages import utcnow
from scanflow_agents.redaction import mask

if TYPE_CHECKING:
    from scanflow_agents._core.running import AgentRuntime


def describe(runtime: AgentRuntime) -> dict[str, Any]:
    """The full description: sensors (schedule, last result), rules, actuators (schemas)."""
    agent = runtime.agent
    reactor = runtime.reactor
    sensors = []
    for sid, spec in agent.sensors.items():
        next_run = runtime.scheduler.next_run(sid) if runtime.scheduler else None
        sensors.append(
            {
                "id": sid,
                "description": spec.description,
                "trigger": str(spec.trigger),
                "next_run": next_run.isoformat() if next_run else None,
                **reactor.sensor_states[sid].summary(),
            }
        )
    rules = [
        {
            "id": rid,
            "description": spec.description,
            "sensors": list(spec.sensors),
            "topics": list(spec.topics),
            "runs": reactor.rule_states[rid].runs,
            "decisions": reactor.rule_states[rid].decisions,
            "failures": reactor.rule_states[rid].failures,
            "last_decision": reactor.rule_states[rid].last_decision,
        }
        for rid, spec in agent.rules.items()
    ]
    actuators = [
        {
            "id": aid,
            "description": spec.description,
            "params": spec.schema(),
            "cooldown": spec.cooldown,
            "timeout": spec.options.timeout or runtime.settings.agent.handlers.timeout,
            "rate": str(spec.rate) if spec.rate else None,
            "idempotent": spec.idempotent,
            "read_only": spec.read_only,
            "executions": runtime.dispatcher.executions.get(aid, 0),
        }
        for aid, spec in agent.actuators.items()
    ]
    # Last results and errors are the handlers' own words: masked before anyone reads them.
    shown: dict[str, Any] = mask(
        {
            **heartbeat(runtime),
            "sensors": sensors,
            "rules": rules,
            "actuators": actuators,
            # Per topic pattern: the durable consumer and what it handled, skipped as
            # duplicates, as too old, or as malformed.
            "consumers": runtime.consumers.summary(),
        }
    )
    return shown


def heartbeat(runtime: AgentRuntime) -> dict[str, Any]:
    """The short liveness record sent every ``heartbeat_interval`` seconds."""
    return {
        "agent": runtime.agent.name,
        "class": f"{type(runtime.agent).__module__}.{type(runtime.agent).__qualname__}",
        "namespace": runtime.settings.namespace,
        "instance": runtime.instance,
        "state": runtime.state,
        "ready": runtime.ready,
        "time": utcnow().isoformat(),
        "uptime": round(time.monotonic() - runtime.started_at, 3),
        "events": dict(runtime.recorder.counts),
        "backlog": len(runtime.recorder.backlog),
        # Whether this replica runs the sensors and rules (holds the lease), the
        # leader's instance, and the lease's fencing token while leading.
        **runtime.leadership.summary(),
        **runtime.controller.summary(),  # dry-run, paused sensors, approvals waiting
    }
