"""The agents the core benchmark runs, each with ``scanflow run bench/_agents.py:<Class>``.

This file is imported by the measured agent processes, so it imports nothing
but the framework: whatever heavy library shows up in their memory is the
framework's doing, not the benchmark's.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

from scanflow_agents import Agent, Call, Decision, Event, actuator, rule, sensor

# Event topic the source publishes on; the watcher's rule reacts to it.
TICK_TOPIC = "load.tick"
# Libraries an agent process must not load unless the agent itself needs them.
HEAVY_MODULES = ("numpy", "scipy", "pandas", "mlflow", "kubernetes", "sklearn")


class Scaler(Agent):
    """The callee of sections 3 and 4: one typed actuator, as in the quickstart."""

    @actuator()
    async def scale(self, replicas: int, service: str = "digits") -> dict[str, object]:
        """Set the number of replicas of a service.

        Args:
            replicas: the wanted number of replicas.
            service: the service to scale.
        """
        # CLOCK_MONOTONIC is one clock for every process of a Linux machine, so
        # the benchmark can subtract its own publish time from this start time.
        return {"service": service, "replicas": replicas, "started": time.monotonic()}


class Watcher(Agent):
    """Agent A of section 4: a rule on an event topic that calls the scaler."""

    @rule(on=TICK_TOPIC)
    async def scale_out(self, event: Event) -> Decision:
        return Decision(
            action="scale-out",
            reason="load tick",
            calls=[Call(agent="scaler", actuator="scale", params={"replicas": event.payload["n"]})],
        )


class Idle(Agent):
    """The memory section's agent: one slow sensor and one actuator, otherwise idle."""

    @sensor(every=60)
    async def heartbeat_rate(self) -> float:
        return 0.0

    @actuator()
    async def scale(self, replicas: int, service: str = "digits") -> dict[str, object]:
        """Set the number of replicas of a service.

        Args:
            replicas: the wanted number of replicas.
            service: the service to scale.
        """
        return {"service": service, "replicas": replicas}


def _report_heavy_modules(path: str) -> None:
    # Written at exit (after a graceful stop), so it also catches modules
    # imported lazily while the agent ran, not only those loaded at start.
    loaded = sorted(name for name in HEAVY_MODULES if name in sys.modules)
    with open(path, "w") as out:
        out.write("\n".join(loaded))


if os.environ.get("SCANFLOW_BENCH_MODULES_FILE"):
    atexit.register(_report_heavy_modules, os.environ["SCANFLOW_BENCH_MODULES_FILE"])
