"""Prometheus metrics of an agent process: the instruments the pod entrypoint plugs in.

Names follow Prometheus's rules: a ``scanflow_`` prefix, base units
(``_seconds``), counters ending in ``_total``, and labels from a bounded set
(agent, sensor, rule, actuator, loop, outcome), never an id. Each
process has its own registry, so two servers in one test process do not share
counters and nothing of the client library's global state leaks in.

Requires the ``pod`` extra (``prometheus-client``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scanflow_agents import Agent
from scanflow_agents.messages import Reply
from scanflow_agents.transports.base import Transport

Respond = Callable[[Reply], Awaitable[None]]

# Handler latencies run from milliseconds (a cached reply) to minutes (a deploy).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class PrometheusInstruments:
    """Counts and times what the agents of this process do (see ``_core/instruments.py``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sensor_runs = Counter(
            "scanflow_sensor_runs_total", "Sensor runs that ended.", ["agent", "sensor"], registry=r
        )
        self.sensor_failures = Counter(
            "scanflow_sensor_failures_total",
            "Sensor runs that failed after their retries.",
            ["agent", "sensor"],
            registry=r,
        )
        self.sensor_seconds = Histogram(
            "scanflow_sensor_duration_seconds",
            "How long sensor runs took, retries included.",
            ["agent", "sensor"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "scanflow_rule_decisions_total", "Decisions rules made.", ["agent", "rule"], registry=r
        )
        self.calls = Counter(
            "scanflow_actuator_calls_total",
            "Actuator calls answered, by outcome: ok, or the reply's error code.",
            ["agent", "actuator", "outcome"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "scanflow_actuator_call_duration_seconds",
            "Seconds from a call's arrival to its reply.",
            ["agent", "actuator"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "scanflow_actuator_calls_in_flight",
            "Actuator calls arrived and not yet answered.",
            ["agent"],
            registry=r,
        )
        self.broken = Counter(
            "scanflow_loop_failures_total",
            "Guarded endless loops (heartbeat, recorder) that ended: the process is not alive.",
            ["agent", "loop"],
            registry=r,
        )
        self.broken_loops: list[tuple[str, str]] = []

    # -- the hooks of the core's Instruments protocol -----------------------------------

    def sensor_ran(self, agent: str, sensor: str, outcome: Any) -> None:
        # outcome: the core's execution outcome (ok, duration); duck-typed, as the
        # runtime layer does not import the core's private modules.
        self.sensor_runs.labels(agent, sensor).inc()
        failures = self.sensor_failures.labels(agent, sensor)  # present at 0 from the first run
        if not outcome.ok:
            failures.inc()
        self.sensor_seconds.labels(agent, sensor).observe(outcome.duration)

    def rule_decided(self, agent: str, rule: str) -> None:
        self.decisions.labels(agent, rule).inc()

    def call_answered(self, agent: str, actuator: str, respond: Respond) -> Respond:
        started = time.monotonic()
        gauge = self.in_flight.labels(agent)
        gauge.inc()
        answered = False

        async def timed(reply: Reply) -> None:
            nonlocal answered
            if not answered:  # one reply per call; count it once
                answered = True
                gauge.dec()
                outcome = "ok" if reply.ok or reply.error is None else str(reply.error.code)
                self.calls.labels(agent, actuator, outcome).inc()
                self.call_seconds.labels(agent, actuator).observe(time.monotonic() - started)
            await respond(reply)

        return timed

    def loop_broken(self, agent: str, task: str) -> None:
        self.broken.labels(agent, task).inc()
        self.broken_loops.append((agent, task))

    # -- state read at scrape time -------------------------------------------------------

    def watch(self, agents: Iterable[Agent], transport: Transport) -> None:
        """Report the agents' readiness and recorder backlogs, and the connection's counts."""
        self.registry.register(_AgentState(list(agents), transport))


class _AgentState(Collector):
    """Values read from the agents and the connection when scraped (no bookkeeping between).

    Messages in and out are the NATS client's own counters: every message of
    the process passes through its one connection, so they are exact without a
    hook on each publish, and they cover replies and heartbeats alike.
    """

    def __init__(self, agents: list[Agent], transport: Transport) -> None:
        self.agents = agents
        self.transport = transport

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "scanflow_recorder_backlog_events",
            "Events recorded and not yet stored in the stream.",
            labels=["agent"],
        )
        ready = GaugeMetricFamily(
            "scanflow_agent_ready",
            "1 when the agent serves (started, subscribed).",
            labels=["agent"],
        )
        unstored = GaugeMetricFamily(
            "scanflow_recorder_unstored",
            "1 while the stream cannot store the agent's records (its actions refused, or "
            "unrecorded with settings.agent.unrecorded=act).",
            labels=["agent"],
        )
        for agent in self.agents:
            health = agent.runtime.health() if agent.is_running else None
            backlog.add_metric([agent.name], health.backlog if health else 0)
            ready.add_metric([agent.name], 1 if health is not None and health.ready else 0)
            unstored.add_metric([agent.name], 1 if health and health.unstored else 0)
        yield backlog
        yield ready
        yield unstored
        yield GaugeMetricFamily(
            "scanflow_nats_connected",
            "1 while the connection to NATS is up.",
            value=1 if self.transport.connected else 0,
        )
        stats: dict[str, int] = getattr(getattr(self.transport, "nc", None), "stats", {})
        for key, name, text in _NATS_COUNTS:
            if key in stats:
                yield CounterMetricFamily(name, text, value=stats[key])

    def describe(self) -> Iterator[Metric]:
        return iter(())


_NATS_COUNTS = (
    ("in_msgs", "scanflow_nats_messages_received", "Messages received on the NATS connection."),
    ("out_msgs", "scanflow_nats_messages_sent", "Messages sent on the NATS connection."),
    ("in_bytes", "scanflow_nats_received_bytes", "Payload bytes received from NATS."),
    ("out_bytes", "scanflow_nats_sent_bytes", "Payload bytes sent to NATS."),
    ("reconnects", "scanflow_nats_reconnects", "Reconnections to NATS."),
)
