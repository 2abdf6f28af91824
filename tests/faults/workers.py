"""The agent the fault tests run in real processes (``scanflow run .../workers.py:Worker``).

Every execution of ``work`` appends ``<pid> <call id>`` to the file named by
``FAULTS_MARKS`` before it sleeps, so a test can count executions per call id
across processes, including one killed mid-action.
"""

from __future__ import annotations

import asyncio
import os

from scanflow_agents import Agent, actuator


class Worker(Agent):
    @actuator(timeout=5)
    async def work(self, seconds: float, blob: str = "") -> dict[str, object]:
        # A small blocking append on purpose: the mark must be on disk before
        # the action goes on, even if the process is killed right after.
        with open(os.environ["FAULTS_MARKS"], "a") as marks:  # noqa: ASYNC230
            marks.write(f"{os.getpid()} {self.message_id}\n")
        await asyncio.sleep(seconds)
        return {"pid": os.getpid(), "size": len(blob)}
