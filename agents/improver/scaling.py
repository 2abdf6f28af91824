"""Replica planning: the target count from demand in one step, without flapping.

The target is ``ceil(rps * (1 + headroom) / capacity)`` bounded by
``[min_replicas, max_replicas]``: one jump to what the demand needs, not a
ratio step per period as Kubernetes' HPA takes. Guards against flapping:

- scale out only on an SLO breach, at most once per ``scale_out_cooldown``;
- scale in only after ``scale_in_windows`` calm windows in a row in which the
  demand, with headroom, fits in fewer replicas, and ``scale_in_cooldown``
  after the last change: the headroom is the hysteresis band;
- a breach at a count the estimate said was enough lowers the capacity
  estimate (the model was optimistic), so the next target is right;
- the estimate comes back: a healthy window never leaves it below what each
  replica just served within the objective, and after ``recover_windows``
  healthy windows in a row it moves halfway back to the configured
  ``capacity_rps``. One transient breach (a cold replica, a training run
  sharing the CPUs) therefore cannot pin a service at a high count: the
  estimate comes back, and scale-in follows. A breach that comes again once
  the estimate has risen is real: each scale-out doubles the healthy windows
  the next rise waits for (up to eight times ``recover_windows``, until the
  estimate is back at the first guess), so a service whose replicas really
  hold less than the first guess flaps ever more rarely;
- a finding whose window started before the last change is stale (it
  measured the old replica count) and is ignored: findings come in bursts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scanflow_agents.builtin.improver.settings import Scaling

from scanflow_agents import clocks


@dataclass
class Plan:
    """A scaling plan: where to, and why."""

    target: int
    current: int
    reason: str
    evidence: dict[str, Any]


@dataclass
class Autoscaler:
    """The replica planner of one service node."""

    settings: Scaling
    capacity: float = 0.0
    last_change: float = field(default=-math.inf)
    last_scale_out: float = field(default=-math.inf)
    changed_at: float = field(default=-math.inf)  # wall clock, to compare with windows
    calm: int = 0
    healthy: int = 0  # healthy windows in a row since the estimate was last lowered
    lowered: int = 0  # breaches since the estimate was last back at its first guess

    def __post_init__(self) -> None:
        self.capacity = self.capacity or self.settings.capacity_rps

    def target(self, rps: float) -> int:
        wanted = math.ceil(rps * (1 + self.settings.headroom) / self.capacity) if rps > 0 else 0
        return max(self.settings.min_replicas, min(self.settings.max_replicas, wanted))

    def plan(self, finding: dict[str, Any], now: float | None = None) -> Plan | None:
        """The plan for one SLO finding (``breached``, ``rps``, ``replicas``), or ``None``."""
        now = clocks.now() if now is None else now
        started = (finding.get("window") or {}).get("start")
        if started is not None and float(started) < self.changed_at:
            return None  # measured (partly) before our last change took effect: stale
        rps = float(finding.get("rps") or 0.0)
        current = int(finding.get("replicas") or 0)
        breached = bool(finding.get("breached"))
        evidence = {
            "rps": rps,
            "replicas": current,
            "capacity_rps": round(self.capacity, 2),
            "headroom": self.settings.headroom,
            "latency_p95_ms": finding.get("latency_p95_ms"),
            "objective_ms": finding.get("objective_ms"),
        }
        if breached:
            self.calm = self.healthy = 0
            return self._out(rps, current, now, evidence)
        self._recover(rps, current)
        evidence["capacity_rps"] = round(self.capacity, 2)
        target = self.target(rps)
        self.calm = self.calm + 1 if target < current else 0
        if (
            target < current
            and self.calm >= self.settings.scale_in_windows
            and now - self.last_change >= self.settings.scale_in_cooldown
        ):
            self.calm = 0
            self.last_change, self.changed_at = now, clocks.wall()
            reason = (
                f"{rps:.1f} rps fits {target} replica(s) of {self.capacity:.1f} rps with "
                f"{self.settings.headroom:.0%} headroom, "
                f"for {self.settings.scale_in_windows} windows"
            )
            return Plan(target, current, reason, evidence)
        return None

    def _recover(self, rps: float, current: int) -> None:
        """Raise the estimate after a healthy window (see the module's docstring)."""
        if not self.settings.learn:
            return
        first_guess = self.settings.capacity_rps
        if current > 0:
            # What each replica just served within the objective is sustainable.
            self.capacity = max(self.capacity, min(first_guess, rps / current))
        self.healthy += 1
        # At most eight times as long: the estimate must still come back in minutes.
        wait = self.settings.recover_windows * 2 ** min(3, max(0, self.lowered - 1))
        if self.healthy >= wait and self.capacity < first_guess:
            self.healthy = 0
            self.capacity += (first_guess - self.capacity) / 2
        if first_guess - self.capacity < 0.01 * first_guess:
            self.capacity, self.lowered = first_guess, 0

    def _out(self, rps: float, current: int, now: float, evidence: dict[str, Any]) -> Plan | None:
        if now - self.last_scale_out < self.settings.scale_out_cooldown:
            return None  # the last scale-out has not taken effect yet
        target = self.target(rps)
        if target <= current and current > 0 and self.settings.learn:
            # Breached although the estimate said `current` was enough: it was optimistic.
            self.capacity = min(self.capacity, rps / current) * 0.9
            evidence["capacity_rps"] = round(self.capacity, 2)
            target = self.target(rps)
        target = max(target, min(current + 1, self.settings.max_replicas))
        if target <= current:
            return None  # at the ceiling: nothing more to add
        # Every scale-out makes the next rise of the estimate wait longer (reset once it
        # is back at the first guess): a limit that is real stops flapping. Breaches of
        # one episode (in the cooldown, or measured before the change) are not counted.
        self.lowered += 1
        self.last_scale_out = self.last_change = now
        self.changed_at = clocks.wall()
        reason = (
            f"latency objective breached at {rps:.1f} rps on {current} replica(s); "
            f"{target} replica(s) of {self.capacity:.1f} rps "
            f"with {self.settings.headroom:.0%} headroom"
        )
        return Plan(target, current, reason, evidence)
