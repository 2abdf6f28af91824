"""A changed policy for the quickstart's watcher, tried as a shadow beside the live one.

The live watcher (``examples/quickstart.py``) scales out above 100 requests/s;
this one from 80, with a replica per 40. Run it as a shadow next to the
quickstart's agents:

    scanflow run examples/quickstart.py --embedded-nats
    scanflow --nats nats://127.0.0.1:<port> run --shadow examples/shadow_policy.py:LoadWatch

It runs as ``load-watch-shadow``: its rule gets the live watcher's recorded
observations (its own sensor does not run), and its calls reach the scaler as
dry runs, recorded and never acted on. ``scanflow shadow-diff load-watch``
lists where the two policies decided otherwise (``docs/guides/shadow.md``).
"""

from __future__ import annotations

import math

import quickstart

from scanflow_agents import Call, Decision, Observation, rule


class LoadWatch(quickstart.LoadWatch):
    """The quickstart's watcher, scaling out earlier."""

    @rule("request_rate")
    async def too_busy(self, observation: Observation) -> Decision | None:
        rps = observation.value["rps"]
        if rps <= 80:
            return None
        replicas = math.ceil(rps / 40)
        return Decision(
            action="scale-out",
            reason=f"{rps} rps is over 80",
            evidence={"rps": rps},
            calls=[Call(agent="scaler", actuator="scale", params={"replicas": replicas})],
        )
