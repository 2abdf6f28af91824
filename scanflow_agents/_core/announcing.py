"""What a replica tells watchers about itself: heartbeats, and its last state, kept.

Heartbeats go over core NATS and are not stored: a command started after a
replica left hears nothing of it, and cannot tell a clean stop from a crash.
So each replica also keeps its last heartbeat in the namespace's key-value
bucket (:attr:`~scanflow_agents.subjects.Subjects.agents_bucket`), under
``<agent>.<instance>``. It is written when what people read of it changes
(state, readiness, dry-run, paused sensors, leadership, freeze, whether
its records are stored), at the clean stop
(state ``stopped``), and again once half the bucket's ttl
(``settings.agent.last_state_ttl``) has passed, so a replica that runs for
weeks stays listed. A reader then knows a replica that answers no discovery
either stopped (its entry says so) or died without a word (its entry says
it runs): ``stale``.

The :class:`Announcer` is the only writer of this replica's entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from scanflow_agents.messages import Envelope, Heartbeat
from scanflow_agents.subjects import Subjects
from scanflow_agents.transports.base import Transport

logger = logging.getLogger("scanflow_agents.announcing")


def _shown(beat: Heartbeat) -> tuple[object, ...]:
    # What `scanflow agents` and the console show of a replica; the counters
    # (uptime, events, approvals) change every beat and are not worth a write.
    return (
        beat.state, beat.ready, beat.dry_run, beat.paused_sensors, beat.leader, beat.frozen,
        beat.unstored is not None,
    )  # fmt: skip


class Announcer:
    """Sends one replica's heartbeats and keeps its last state in the agents bucket.

    Args:
        agent: the agent's name, in logs.
        transport: the agent's connection.
        subjects: the namespace's subjects (heartbeat subject, bucket name).
        beat: the replica's heartbeat now.
        interval: seconds between heartbeats.
        keep: seconds the bucket keeps an entry after its last write.
    """

    def __init__(
        self,
        agent: str,
        transport: Transport,
        subjects: Subjects,
        *,
        beat: Callable[[], Heartbeat],
        interval: float,
        keep: float,
    ) -> None:
        self.agent = agent
        self.transport = transport
        self.subjects = subjects
        self.beat = beat
        self.interval = interval
        self.keep = keep
        self._stored: tuple[object, ...] | None = None
        self._stored_at = 0.0

    async def run(self, *, first: bool = True) -> None:
        """Announce every ``interval`` seconds, until cancelled; a failed beat is logged.

        ``first=False`` when the caller has just announced: the loop starts with a wait.
        """
        if not first:
            await asyncio.sleep(self.interval)
        while True:
            await self.try_announce()
            await asyncio.sleep(self.interval)

    async def try_announce(self, timeout: float | None = None) -> None:
        """:meth:`announce`, with a failure (or no answer within ``timeout``) logged, not raised."""
        try:
            async with asyncio.timeout(timeout):
                await self.announce()
        except Exception as exc:  # a missed heartbeat must not end the loop
            reason = str(exc) or type(exc).__name__
            logger.warning("agent %r could not send a heartbeat: %s", self.agent, reason)

    async def announce(self) -> None:
        """Send a heartbeat now, and store it if what it shows changed."""
        beat = self.beat()
        envelope = Envelope(
            kind="heartbeat", source=beat.agent, payload=beat.model_dump(mode="json")
        )
        await self.transport.publish(self.subjects.heartbeat(beat.agent), envelope.encode())
        stale = time.monotonic() - self._stored_at > self.keep / 2
        if _shown(beat) != self._stored or stale:
            await self._store(beat)

    async def _store(self, beat: Heartbeat) -> None:
        try:
            bucket = await self.transport.key_value(self.subjects.agents_bucket, ttl=self.keep)
            key = f"{beat.agent}.{beat.instance}"
            await bucket.put(key, beat.model_dump_json(by_alias=True).encode())
        except Exception as exc:
            # Tried again at the next beat (nothing counts as stored); meanwhile
            # a reader that starts now sees the state stored before.
            logger.warning("agent %r could not keep its last state: %s", self.agent, exc)
            return
        self._stored, self._stored_at = _shown(beat), time.monotonic()
