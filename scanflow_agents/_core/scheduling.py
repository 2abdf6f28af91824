"""Time triggers on APScheduler 3 (``AsyncIOScheduler``).

Each interval, cron or date sensor is one job with ``max_instances=1`` and
``coalesce=True``: a sensor never overlaps itself, and runs missed while the
agent was busy collapse into one instead of firing in a burst.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scanflow_agents.triggers import At, Cron, Interval

if TYPE_CHECKING:
    from scanflow_agents.sensors import SensorSpec

logger = logging.getLogger("scanflow_agents.scheduling")


class Scheduler:
    """Schedules one agent's time-triggered sensors.

    Args:
        agent: the agent's name (names the jobs in APScheduler's logs).
        sensors: the sensors to schedule; event sensors among them are skipped.
        run: runs one sensor by id; awaited by the job, so a run that lasts
            longer than its interval holds back the next one (``max_instances=1``).
        leading: whether this replica leads its agent now; a replica that does
            not lets the tick pass (the leader runs it), so that replicas of
            one agent do not all run each sensor.
    """

    def __init__(
        self,
        agent: str,
        sensors: Iterable[SensorSpec],
        run: Callable[[str], Awaitable[Any]],
        *,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        # Imported when a scheduler is built, not with the core: clients and the CLI
        # import the core and never schedule anything.
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.agent = agent
        self.sensors = list(sensors)
        self.run = run
        self.leading = leading
        self.passed = 0  # ticks let pass because another replica leads
        # UTC: a cron expression means the same on every pod, whatever its zone.
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self.started = False

    def start(self) -> None:
        """Add one job per time-triggered sensor and start ticking (needs a running loop)."""
        for spec in self.sensors:
            trigger = _trigger(spec)
            if trigger is None:
                continue
            self._scheduler.add_job(
                self._tick,
                trigger,
                args=[spec.id],
                id=spec.id,
                name=f"{self.agent}:{spec.id}",
                max_instances=1,
                coalesce=True,
                # No grace limit: a run made late by a busy loop still happens (coalesced
                # with any others missed) rather than being dropped as missed.
                misfire_grace_time=None,
            )
        self._scheduler.start()
        self.started = True

    async def _tick(self, sensor_id: str) -> None:
        # Checked at each tick, not at start: leadership moves while we run.
        if not self.leading():
            self.passed += 1
            return
        await self.run(sensor_id)

    def next_run(self, sensor_id: str) -> datetime | None:
        """When the sensor runs next (``None``: not scheduled, or not started)."""
        if not self.started:
            return None
        job = self._scheduler.get_job(sensor_id)
        return job.next_run_time if job is not None else None

    def stop(self) -> None:
        """Stop starting runs (idempotent); runs under way are the runtime's to wait for."""
        if self.started:
            self.started = False
            self._scheduler.shutdown(wait=False)


def _trigger(spec: SensorSpec) -> Any:
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    trigger = spec.trigger
    if isinstance(trigger, Interval):
        return IntervalTrigger(
            seconds=trigger.seconds, jitter=trigger.jitter or None, timezone="UTC"
        )
    if isinstance(trigger, Cron):
        return trigger.to_apscheduler()
    if isinstance(trigger, At):
        return DateTrigger(run_date=trigger.when)
    return None  # event sensors are driven by subscriptions, not by time
