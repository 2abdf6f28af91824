"""The first agents of the docs' getting-started page: a watcher that asks a scaler to scale.

Run it with an embedded NATS server:

    scanflow run examples/quickstart.py --embedded-nats

The watcher samples a (simulated) request rate every second; when it passes
100 requests/s, its rule decides to scale out and calls the scaler's
actuator over NATS. The scaler's cooldown keeps it from flapping.
"""

from __future__ import annotations

import math
import time

from scanflow_agents import Agent, Call, Decision, Observation, actuator, rule, sensor


class LoadWatch(Agent):
    """Watches the request rate of the 'digits' service."""

    @sensor(every=1.0)
    async def request_rate(self) -> dict[str, float]:
        # A stand-in for a real metric source: a wave between 20 and 180 rps.
        rps = 100 + 80 * math.sin(time.time() / 5)
        return {"rps": round(rps, 1)}

    @rule("request_rate")
    async def too_busy(self, observation: Observation) -> Decision | None:
        rps = observation.value["rps"]
        if rps <= 100:
            return None
        replicas = math.ceil(rps / 50)  # one replica per 50 rps, in one step
        return Decision(
            action="scale-out",
            reason=f"{rps} rps is over 100",
            evidence={"rps": rps},
            calls=[Call(agent="scaler", actuator="scale", params={"replicas": replicas})],
        )


class Scaler(Agent):
    """Scales the service (here it only remembers the count)."""

    replicas = 1

    @actuator(cooldown=3.0)
    async def scale(self, replicas: int, service: str = "digits") -> dict[str, object]:
        """Set the number of replicas of a service.

        Args:
            replicas: the wanted number of replicas.
            service: the service to scale.
        """
        changed = replicas != self.replicas
        self.replicas = replicas
        return {"service": service, "replicas": replicas, "changed": changed}
