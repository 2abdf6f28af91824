"""A load gate and a changed version of it, for the console's replay and shadow views.

The console loads this file by path (``replay tests/console/policies.py:EarlierGate``),
as a person would load the policy they are changing.
"""

from __future__ import annotations

import math

from scanflow_agents import Agent, Call, Decision, Event, rule


class LoadGate(Agent):
    """Scales out above 100 requests/s, a replica per 50."""

    threshold, per = 100, 50

    @rule(on="load.*")
    async def busy(self, event: Event) -> Decision | None:
        rps = event.payload["rps"]
        if rps <= self.threshold:
            return None
        replicas = math.ceil(rps / self.per)
        return Decision(
            action="scale-out",
            reason=f"{rps} rps is over {self.threshold}",
            calls=[Call(agent="scaler", actuator="scale", params={"replicas": replicas})],
        )


class EarlierGate(LoadGate, name="load-gate"):
    """The change tried: from 80 requests/s, a replica per 40."""

    threshold, per = 80, 40
