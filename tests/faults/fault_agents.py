"""The agents the fault tests run as real processes (``scanflow run <this file>:<Class>``).

Each writes one line per handled event or executed action to a file named by
the environment, with ``os.write`` on an append-only descriptor: a line
written is on record even if the process is killed the next instant.
"""

from __future__ import annotations

import asyncio
import os
import time

from scanflow_agents import Agent, Call, Decision, Event, actuator, rule

TOPIC = "fault.tick"


def _append(variable: str, line: str) -> None:
    fd = os.open(os.environ[variable], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


class Counter(Agent):
    """A rule on ``fault.tick`` that logs ``<n> <pid> <time>``; with FAULT_ACT, calls the actor."""

    @rule(on=TOPIC)
    async def count(self, event: Event) -> Decision | None:
        n = event.payload["n"]
        _append("FAULT_HANDLED", f"{n} {os.getpid()} {time.time():.3f}")
        if not os.environ.get("FAULT_ACT"):
            return None
        return Decision(action="act", calls=[Call(agent="actor", actuator="act", params={"n": n})])


class Actor(Agent):
    """The action: logs ``<n> <pid> <time>`` once per execution, then takes FAULT_ACT_SECONDS.

    The delay keeps the caller waiting for most of its time, so that a caller
    killed at a random moment is most likely killed in the middle of a call.
    """

    @actuator()
    async def act(self, n: int) -> int:
        """Act on tick ``n``.

        Args:
            n: the tick.
        """
        _append("FAULT_ACTIONS", f"{n} {os.getpid()} {time.time():.3f}")
        await asyncio.sleep(float(os.environ.get("FAULT_ACT_SECONDS", "0")))
        return n
